"""One request's spans, as the request path sees them (``RequestTrace``, carried by its
``Call``): the request's SERVER span (opened at the HTTP edge) renamed and given the GenAI
attributes, a child span per stage, and one CLIENT span per upstream attempt whose context
goes upstream as ``traceparent``.

Attribute names follow the OpenTelemetry GenAI semantic conventions (``gen_ai.provider.name``,
which replaced ``gen_ai.system``); Farebox's own are ``farebox.*``. Prompt and completion text
is recorded only when the plan allows it (``traces_content``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeGuard

from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry
from farebox.core.routing import Target
from farebox.core.usage import Usage
from farebox.observe.traces_content import StreamText, input_messages, output_messages

# request fields recorded as they are, when they are numbers
_NUMBERS = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)
MAX_STOP_SEQUENCES = 4
Attributes = dict[str, str | bool | int | float | list[str]]


class RequestTrace:
    """The spans of one request; made by ``Tracing.request`` when tracing is on."""

    __slots__ = ("_content", "_kind", "_kind_of", "_operation", "_parent", "_propagator",
                 "_recording", "_stages", "_stream", "_tracer", "span")  # fmt: skip

    def __init__(
        self,
        tracer: Tracer,
        propagator: TextMapPropagator,
        span: Span,
        operation: str,
        body: Mapping[str, Any],
        content: bool,
        kind_of: Callable[[Target], str],
        stages: bool = True,
    ) -> None:
        self._tracer = tracer
        self._stages = stages  # false: no span per stage (``tracing.stages``)
        # sampled out: no child spans and no attributes, only the context goes upstream
        self._recording = recording = span.is_recording()
        self._propagator = propagator
        self.span = span  # the request's SERVER span
        self._parent = trace.set_span_in_context(span)
        self._operation = operation
        self._content = content and operation != "embeddings"
        self._kind_of = kind_of  # a deployment's provider kind (openai, anthropic, mock)
        self._kind = ""  # the provider kind of the last attempt
        self._stream: StreamText | None = None  # a stream's text, when content is recorded
        if not recording:
            return
        span.update_name(f"{operation} {body.get('model')}")
        span.set_attributes(request_attributes(operation, body))
        if self._content:
            text, cut = input_messages(body.get("messages"))
            span.set_attribute("gen_ai.input.messages", text)
            if cut:
                span.set_attribute("farebox.content_truncated", True)

    def input_rewritten(self, body: Mapping[str, Any]) -> None:
        """The guardrails redacted the input: record what goes upstream instead (issue 15),
        so the values kept from the provider are kept from the trace backend too."""
        if self._recording and self._content:
            text, cut = input_messages(body.get("messages"))
            self.span.set_attribute("gen_ai.input.messages", text)
            if cut:
                self.span.set_attribute("farebox.content_truncated", True)

    @contextmanager
    def stage(self, name: str) -> Iterator[Span]:
        """A child span of the request for one stage (``route``, ``admit``, ``settle``); with
        ``tracing.stages: false``, the request's own span (a failed stage marks the request)."""
        if not (self._stages and self._recording):
            yield self.span
            return
        span = self._tracer.start_span(name, self._parent)
        try:
            yield span
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            span.end()

    @contextmanager
    def attempt(self, target: Target) -> Iterator[Attempt]:
        """The CLIENT span of one upstream attempt; its ``headers`` carry its context (a
        sampled-out request's own, unsampled, context: no span is made for it)."""
        if not self._recording:
            headers: dict[str, str] = {}
            self._propagator.inject(headers, self._parent)
            yield Attempt(self, self.span, headers)
            return
        self._kind = kind = self._kind_of(target)
        attributes: Attributes = {
            "gen_ai.operation.name": self._operation,
            "gen_ai.request.model": target.model,
            "gen_ai.provider.name": kind,
            "farebox.deployment": f"{target.provider}/{target.model}",
        }
        name = f"{self._operation} {target.model}"
        span = self._tracer.start_span(name, self._parent, SpanKind.CLIENT, attributes)
        headers = {}
        self._propagator.inject(headers, trace.set_span_in_context(span))
        try:
            yield Attempt(self, span, headers)
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            span.end()

    def skipped(self, target: Target) -> None:
        """A deployment passed over: its circuit breaker is open."""
        deployment = f"{target.provider}/{target.model}"
        self.span.add_event("farebox.breaker_open", {"farebox.deployment": deployment})

    def answered(self, body: Mapping[str, Any]) -> None:
        """A whole (not streamed) answer: its id, finish reasons and, if allowed, its text."""
        if not self._recording:
            return
        span = self.span
        response_id = body.get("id")
        if isinstance(response_id, str):
            span.set_attribute("gen_ai.response.id", response_id)
        choices = body.get("choices")
        if isinstance(choices, list):
            reasons = [str(c.get("finish_reason")) for c in choices if isinstance(c, Mapping)]
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
        if self._content:
            self._output(*output_messages(body))

    def collector(self) -> Callable[[Mapping[str, Any]], None] | None:
        """What gathers a stream's text chunk by chunk; ``None`` unless the plan records it."""
        if not (self._content and self._recording):
            return None
        self._stream = StreamText()
        return self._stream.see

    def _output(self, text: str, cut: bool) -> None:
        self.span.set_attribute("gen_ai.output.messages", text)
        if cut:
            self.span.set_attribute("farebox.content_truncated", True)

    async def settle(
        self, entry: LedgerEntry, write: Callable[[LedgerEntry], Awaitable[None]]
    ) -> None:
        """Write the request's ledger entry in a ``settle`` span; its usage and cost go on
        the request's span."""
        if not self._recording:
            await write(entry)
            return
        self.settled(entry)
        with self.stage("settle"):
            await write(entry)

    def settled(self, entry: LedgerEntry) -> None:
        """The ledger entry that ended the request: usage, exact cost and status (and a
        stream's text, when it is recorded)."""
        if not self._recording:
            return
        self.span.set_attributes(entry_attributes(entry, self._kind))
        if self._stream is not None:
            self._output(*self._stream.messages())


class Attempt:
    """One upstream attempt, as the failover loop sees it."""

    __slots__ = ("_owner", "headers", "span")

    def __init__(self, owner: RequestTrace, span: Span, headers: dict[str, str]) -> None:
        self._owner = owner
        self.span = span
        self.headers = headers  # traceparent (and tracestate) for the upstream request

    def succeeded(self, result: object) -> None:
        """A result came back: its usage on the attempt, its answer on the request."""
        usage = getattr(result, "usage", None)
        if isinstance(usage, Usage):
            self.span.set_attributes(usage_attributes(usage))
        body = getattr(result, "body", None)
        if isinstance(body, dict):
            model = body.get("model")
            if isinstance(model, str):
                self.span.set_attribute("gen_ai.response.model", model)
            self._owner.answered(body)


def request_attributes(operation: str, body: Mapping[str, Any]) -> Attributes:
    """What the client asked for (never its text)."""
    out: Attributes = {"gen_ai.operation.name": operation}
    model = body.get("model")
    if isinstance(model, str):
        out["gen_ai.request.model"] = model
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    if _is_int(cap):
        out["gen_ai.request.max_tokens"] = cap
    for field, name in _NUMBERS:
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    if _is_int(seed := body.get("seed")):
        out["gen_ai.request.seed"] = seed
    if _is_int(n := body.get("n")) and n != 1:
        out["gen_ai.request.choice.count"] = n
    if isinstance(stream := body.get("stream"), bool):
        out["gen_ai.request.stream"] = stream
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    if stops:
        out["gen_ai.request.stop_sequences"] = [str(s)[:64] for s in stops[:MAX_STOP_SEQUENCES]]
    if _is_int(dimensions := body.get("dimensions")):
        out["gen_ai.embeddings.dimension.count"] = dimensions
    return out


def usage_attributes(usage: Usage) -> Attributes:
    out: Attributes = {
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
    }
    if usage.cached_input_tokens:
        out["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    writes = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    if writes:
        out["gen_ai.usage.cache_creation.input_tokens"] = writes
    if usage.reasoning_tokens:
        out["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    return out


def entry_attributes(entry: LedgerEntry, kind: str) -> Attributes:
    out = usage_attributes(Usage(
        input_tokens=entry.input_tokens,
        cached_input_tokens=entry.cached_input_tokens,
        cache_write_5m_tokens=entry.cache_write_5m_tokens,
        cache_write_1h_tokens=entry.cache_write_1h_tokens,
        output_tokens=entry.output_tokens,
        reasoning_tokens=entry.reasoning_tokens,
    ))  # fmt: skip
    out.update({
        "gen_ai.response.model": entry.model_served,
        "farebox.tenant": entry.tenant_id,
        "farebox.key_id": entry.key_id,
        "farebox.provider": entry.provider,
        "farebox.cost_usd": format_usd(entry.cost),
        "farebox.revenue_usd": format_usd(entry.revenue),
        "farebox.status": entry.status,
        "farebox.usage_source": entry.usage_source,
        "farebox.request_id": entry.request_id,
    })  # fmt: skip
    if kind:
        out["gen_ai.provider.name"] = kind
    if entry.error_code:
        out["error.type"] = entry.error_code
    if entry.ttft_ms is not None:
        out["gen_ai.response.time_to_first_chunk"] = entry.ttft_ms / 1000.0
    return out


def failed(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: its error type and the upstream's HTTP status; the
    message is left out (an upstream's error text may echo the prompt). A bug (not a
    ``FareboxError``) is recorded as an exception event as well."""
    if not isinstance(exc, Exception):  # cancelled: the client went away
        span.set_attribute("error.type", "cancelled")
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        return
    code = getattr(exc, "error_code", None)
    kind = code if isinstance(code, str) and code else type(exc).__qualname__
    span.set_attribute("error.type", kind)
    status = getattr(exc, "upstream_status", None)
    if isinstance(status, int) and status > 0:
        span.set_attribute("http.response.status_code", status)
    span.set_status(Status(StatusCode.ERROR, kind))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
