"""The app's tracer: its own ``TracerProvider`` (never the global one), the W3C trace-context
propagator, the exporting processor, and the spans opened at the HTTP edge.

Imported only by ``traces.build_tracing`` once tracing is enabled: this module imports
OpenTelemetry at its top. Nothing is started when it is built; ``start`` (the app's lifespan)
adds the batch processor (a thread of the SDK) and ``stop`` flushes and shuts it down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from farebox import __version__
from farebox.config.observe import TracingConfig
from farebox.core.routing import Target
from farebox.observe.traces_request import RequestTrace, failed

SCOPE = "farebox"  # the instrumentation scope of every span


class ServerSpan:
    """The SERVER span of one data-plane request, as the HTTP edge sees it."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def status(self, code: int) -> None:
        """The HTTP status answered: a 5xx marks the span as failed (a 4xx is the client's)."""
        span = self.span
        span.set_attribute("http.response.status_code", code)
        if code >= 500:
            known = getattr(span, "attributes", None) or {}  # the request path's error code
            if "error.type" not in known:
                span.set_attribute("error.type", str(code))
            span.set_status(Status(StatusCode.ERROR, str(known.get("error.type", code))))


class Tracing:
    """One app's tracing: made by ``traces.build_tracing``, started and stopped by the
    app's lifespan."""

    def __init__(
        self, config: TracingConfig, exporter: SpanExporter | None, content_plans: frozenset[str]
    ) -> None:
        resource = Resource.create({"service.name": config.service_name,
                                    "service.version": __version__})  # fmt: skip
        sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
        self._provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
        self._tracer = self._provider.get_tracer(SCOPE, __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._exporter = exporter
        self._endpoint = config.endpoint
        self._processor: BatchSpanProcessor | None = None
        self._stages = config.stages  # false: no INTERNAL span per stage (cheaper)
        self.content_plans = content_plans

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start exporting (the batch processor's worker thread starts here)."""
        if self._processor is None:
            self._processor = BatchSpanProcessor(self._exporter or self._otlp())
            self._provider.add_span_processor(self._processor)

    async def stop(self) -> None:
        """Export what is left and stop, off the event loop (the exporter's HTTP is blocking)."""
        await asyncio.to_thread(self._provider.shutdown)

    def force_flush(self, timeout_ms: int = 10_000) -> bool:
        return self._provider.force_flush(timeout_ms)

    def reload(self, content_plans: frozenset[str]) -> None:
        """New plans: which of them may record prompt and completion text."""
        self.content_plans = content_plans

    def _otlp(self) -> SpanExporter:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=self._endpoint)

    # spans ------------------------------------------------------------------------------------
    @contextmanager
    def server(
        self, method: str, route: str, carrier: Mapping[str, str] | None, path: str = ""
    ) -> Iterator[ServerSpan]:
        """The SERVER span of one request to ``route`` (at ``path``), current while it is
        served; the child of an incoming ``traceparent`` (and its ``tracestate``), else the
        root of a new trace. The request path renames it once it knows the model."""
        parent = self._propagator.extract(carrier) if carrier else Context()
        attributes = {"http.request.method": method, "http.route": route, "url.path": path or route}
        span = self._tracer.start_span(f"{method} {route}", parent, SpanKind.SERVER, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield ServerSpan(span)
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    @contextmanager
    def stage(self, name: str) -> Iterator[Span]:
        """A stage of the current request (a child of the current span), current while it
        runs; with ``tracing.stages: false``, the request's own span, and no new one."""
        current = trace.get_current_span()
        if not (self._stages and current.is_recording()):  # off, or a sampled-out request
            yield current
            return
        with self._tracer.start_as_current_span(
            name, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except BaseException as exc:
                failed(span, exc)
                raise

    def identify(self, tenant: str, key_id: str) -> None:
        """Who is calling, on the current (the request's) span."""
        span = trace.get_current_span()
        span.set_attribute("farebox.tenant", tenant)
        span.set_attribute("farebox.key_id", key_id)

    def request(
        self,
        operation: str,
        body: Mapping[str, Any],
        plan: str,
        request_id: str,
        kind_of: Callable[[Target], str],
    ) -> RequestTrace | None:
        """The request path's handle on the current request's span (``None`` outside one)."""
        span = trace.get_current_span()
        if not span.get_span_context().is_valid:
            return None
        span.set_attribute("farebox.request_id", request_id)
        span.set_attribute("farebox.plan", plan)
        content = plan in self.content_plans
        tracer = self._tracer
        return RequestTrace(tracer, self._propagator, span, operation, body, content, kind_of,
                            self._stages)  # fmt: skip
