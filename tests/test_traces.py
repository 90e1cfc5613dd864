"""OpenTelemetry traces of the request path, caught by an in-memory span exporter handed to the
app: a failover shows one CLIENT span per attempt with the GenAI attributes, an incoming
``traceparent`` becomes the request span's parent, the upstream request carries the attempt's
context, a stream's span ends with its usage (also when its client goes away), and no prompt
text is recorded unless the plan allows it.

Upstreams are loopback fakes (``tests/fakes``) that record the headers they were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import ADMIN_KEY, Gateway
from fakes import Recorded, Reply
from fakes import openai_upstream as oa
from farebox.app import create_app
from farebox.config.settings import parse_settings
from farebox.core.money import format_usd
from farebox.providers.base import ChatRequest, ChatResult, Provider
from farebox.providers.mock import MockOptions, MockProvider

PRIMARY, FALLBACK = "up-primary", "up-fallback"
ENV = {"A_KEY": "sk-upstream-a", "B_KEY": "sk-upstream-b"}
PROMPT = "the secret prompt xyzzy-4417"
CHAT = {"model": "smart", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Upstream(oa.OpenAIUpstream):
    """An OpenAI fake whose unscripted answers can be switched to an HTTP error."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: int | None = None

    def default_reply(self, request: Recorded) -> Reply:
        if self.failing is None:
            return super().default_reply(request)
        error = {"message": "upstream exploded", "type": "server_error", "code": None}
        return Reply(status=self.failing, body={"error": {**error, "param": None}})


@dataclass
class Traced:
    gw: Gateway
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        assert self.gw.app.state.services.tracing.force_flush()
        return list(self.exporter.get_finished_spans())


def request_span(spans: Sequence[ReadableSpan]) -> ReadableSpan:
    """The one data-plane request's SERVER span among ``spans``."""
    [span] = [s for s in spans if s.kind is SpanKind.SERVER and _is_chat(s)]
    return span


def _is_chat(span: ReadableSpan) -> bool:
    return span.name.startswith(("chat ", "embeddings ", "text_completion "))


@pytest.fixture
def traced(tmp_path: Path) -> Callable[..., Any]:
    """``async with traced(config) as t:`` a gateway whose spans go to ``t.exporter``."""

    @contextlib.asynccontextmanager
    async def factory(
        config: Mapping[str, Any], providers: Mapping[str, Provider] | None = None
    ) -> AsyncIterator[Traced]:
        data = {"database": f"sqlite:///{tmp_path / 'farebox.db'}", **config}
        env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY, **ENV}
        settings = parse_settings(data, source="test.yaml", env=env, base_dir=tmp_path)
        exporter = InMemorySpanExporter()
        app = create_app(
            settings, providers=providers, announce=lambda _m: None, span_exporter=exporter
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield Traced(Gateway(app, client, {"Authorization": f"Bearer {ADMIN_KEY}"}),
                             exporter)  # fmt: skip

    return factory


@pytest.fixture
async def ups() -> AsyncIterator[tuple[Upstream, Upstream]]:
    async with Upstream() as a, Upstream() as b:
        yield a, b


def config(a_url: str, b_url: str, plans: dict[str, Any] | None = None) -> dict[str, Any]:
    providers = {
        "primary": {"kind": "openai", "base_url": a_url, "api_key": "env:A_KEY"},
        "fallback": {"kind": "openai", "base_url": b_url, "api_key": "env:B_KEY"},
    }
    deployments = [
        {"provider": "primary", "model": PRIMARY, "price": {"input": "1.00", "output": "2.00"}},
        {"provider": "fallback", "model": FALLBACK, "price": {"input": "3.00", "output": "5.00"}},
    ]
    out: dict[str, Any] = {"providers": providers, "models": {"smart": deployments}}
    out["routing"] = {"retries": 0, "backoff_s": 0.01}
    if plans:
        out["plans"] = plans
    return out


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


async def chat_once(
    traced: Callable[..., Any],
    settings: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    status: int = 200,
) -> tuple[httpx.Response, list[Any], Sequence[ReadableSpan]]:
    """One chat by tenant ``t1`` on a traced gateway: its answer, the ledger's entries, and
    the spans."""
    async with traced(settings) as t:
        key = await t.gw.tenant_key("t1")
        sent = auth(key, **(headers or {}))
        r = await t.gw.client.post("/v1/chat/completions", json=CHAT, headers=sent)
        assert r.status_code == status, r.text
        entries = await t.gw.ledger("t1")
        spans: Sequence[ReadableSpan] = t.spans()
    return r, entries, spans


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx.trace_flags.sampled
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    ctx = parent.get_span_context()
    return [s for s in spans if s.parent is not None and s.parent.span_id == ctx.span_id]


# 1 --------------------------------------------------------------------------------------
async def test_a_failover_shows_one_client_span_per_attempt(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.failing = 500
    b.reply_chat("from b", usage=oa.usage(1200, 300))
    r, [entry], spans = await chat_once(traced, config(a.base_url, b.base_url))
    server = request_span(spans)
    assert server.name == "chat smart"
    assert server.parent is None  # no traceparent came in: a new trace
    attrs = server.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "smart"
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.response.model"] == FALLBACK
    assert attrs["gen_ai.provider.name"] == "openai"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (1200, 300)
    assert attrs["farebox.cost_usd"] == r.headers["x-farebox-cost-usd"] == format_usd(entry.cost)
    assert attrs["farebox.tenant"] == "t1" and attrs["farebox.key_id"] == entry.key_id
    assert attrs["farebox.status"] == "ok"
    assert attrs["http.response.status_code"] == 200
    assert server.status.status_code is StatusCode.UNSET

    below = children(spans, server)
    attempts = [s for s in below if s.kind is SpanKind.CLIENT]
    assert [s.name for s in attempts] == [f"chat {PRIMARY}", f"chat {FALLBACK}"]
    failed, served = attempts
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "upstream_error"
    assert (failed.attributes or {})["http.response.status_code"] == 500
    assert (failed.attributes or {})["farebox.deployment"] == f"primary/{PRIMARY}"
    assert "gen_ai.usage.input_tokens" not in (failed.attributes or {})
    assert served.status.status_code is StatusCode.UNSET
    served_attrs = served.attributes or {}
    assert served_attrs["gen_ai.request.model"] == FALLBACK
    assert served_attrs["gen_ai.provider.name"] == "openai"
    assert served_attrs["gen_ai.usage.input_tokens"] == 1200
    assert served_attrs["gen_ai.usage.output_tokens"] == 300
    assert failed.end_time is not None and served.start_time is not None
    assert failed.end_time <= served.start_time  # one after the other
    stages = {s.name for s in below if s.kind is SpanKind.INTERNAL}
    assert stages == {"authenticate", "route", "admit", "settle"}
    assert {s.context.trace_id for s in spans if _in_request(s, server)} == {
        server.context.trace_id
    }
    # each upstream request carried its own attempt's context
    assert a.last.headers["traceparent"] == traceparent(failed)
    assert b.last.headers["traceparent"] == traceparent(served)


def _in_request(span: ReadableSpan, server: ReadableSpan) -> bool:
    return span is server or (
        span.parent is not None and span.parent.span_id == server.context.span_id
    )


# 2 --------------------------------------------------------------------------------------
async def test_an_incoming_traceparent_becomes_the_parent(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    incoming = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc"}
    *_, spans = await chat_once(traced, config(a.base_url, b.base_url), incoming)
    server = request_span(spans)
    assert server.context.trace_id == int(TRACE_ID, 16)
    assert server.parent is not None and server.parent.is_remote
    assert server.parent.span_id == int(PARENT_ID, 16)
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert attempt.context.trace_id == int(TRACE_ID, 16)
    sent = a.last.headers["traceparent"]
    assert sent.split("-")[1] == TRACE_ID  # the same trace goes upstream...
    assert sent == traceparent(attempt)  # ...as the attempt's child context
    assert a.last.headers["tracestate"] == "vendor=abc"
    assert b.calls == 0


async def test_a_malformed_traceparent_starts_a_new_trace(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    bad = {"traceparent": "00-not-a-trace-01"}
    *_, spans = await chat_once(traced, config(a.base_url, b.base_url), bad)
    server = request_span(spans)
    assert server.parent is None and server.context.trace_id != 0
    assert a.last.headers["traceparent"].split("-")[1] == f"{server.context.trace_id:032x}"


# 3 --------------------------------------------------------------------------------------
async def test_a_stream_span_ends_with_its_usage(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.reply_stream(["Hel", "lo"], usage=oa.usage(9, 2))
    async with traced(config(a.base_url, b.base_url)) as t:
        key = await t.gw.tenant_key("t1")
        body = {**CHAT, "stream": True}
        r = await t.gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        [entry] = await t.gw.ledger("t1")
        spans = t.spans()
        server = request_span(spans)
    attrs = server.attributes or {}
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (9, 2)
    assert attrs["farebox.cost_usd"] == format_usd(entry.cost)
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["farebox.status"] == "ok" and attrs["farebox.usage_source"] == "provider"
    assert attrs["gen_ai.response.time_to_first_chunk"] == pytest.approx(entry.ttft_ms / 1000)
    [settle] = [s for s in children(spans, server) if s.name == "settle"]
    assert server.end_time is not None and settle.end_time is not None
    assert server.end_time >= settle.end_time  # the request ends after the stream's entry
    assert a.last.headers["traceparent"].split("-")[1] == f"{server.context.trace_id:032x}"


async def test_a_stream_whose_client_goes_away_ends_its_span(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    frames = [oa.frame(chunk) for chunk in oa.stream_chunks(["Hel", "lo"])[:2]]
    a.push(Reply(frames=frames, hold=True))  # the upstream goes quiet, the stream stays open
    async with traced(config(a.base_url, b.base_url)) as t:
        key = await t.gw.tenant_key("t1")
        await _stream_then_leave(t.gw.app, key)
        await t.gw.app.state.services.ledger.flush()
        [entry] = await t.gw.ledger("t1")
        server = request_span(t.spans())
    assert entry.status == "client_disconnected"
    attrs = server.attributes or {}
    assert attrs["farebox.status"] == "client_disconnected"
    assert attrs["farebox.usage_source"] == "estimated"
    assert attrs["farebox.cost_usd"] == format_usd(entry.cost)
    assert attrs["http.response.status_code"] == 200


async def _stream_then_leave(app: Any, key: str) -> None:
    """A raw ASGI client: reads the first bytes of a stream, then disconnects."""
    body = [orjson.dumps({**CHAT, "stream": True})]
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if body:
            return {"type": "http.request", "body": body.pop(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            gone.set()

    path = "/v1/chat/completions"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("gw", 80),
        "headers": [(b"authorization", f"Bearer {key}".encode()),
                    (b"content-type", b"application/json")],
    }  # fmt: skip
    await app(scope, receive, send)
    assert gone.is_set()


# 4 --------------------------------------------------------------------------------------
def _recorded_text(spans: Sequence[ReadableSpan]) -> str:
    """Every attribute and event attribute value of every span, as one string."""
    values: list[str] = []
    for span in spans:
        values += [str(v) for v in (span.attributes or {}).values()]
        for event in span.events:
            values += [str(v) for v in (event.attributes or {}).values()]
        values.append(span.name)
        values.append(str(span.status.description))
    return "\n".join(values)


async def test_no_prompt_or_completion_text_is_recorded_by_default(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.reply_chat("the completion text plugh-9981", usage=oa.usage(5, 5))
    a.reply_stream(["the streamed ", "text quux-1"], usage=oa.usage(5, 5))
    async with traced(config(a.base_url, b.base_url)) as t:
        key = await t.gw.tenant_key("t1")
        for stream in (False, True):
            body = {**CHAT, "stream": stream}
            r = await t.gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
            assert r.status_code == 200, r.text
        spans = t.spans()
    recorded = _recorded_text(spans)
    assert "xyzzy" not in recorded and "plugh" not in recorded and "quux" not in recorded
    assert not any("gen_ai.input.messages" in (s.attributes or {}) for s in spans)
    assert len([s for s in spans if s.kind is SpanKind.SERVER and _is_chat(s)]) == 2


async def test_a_plan_that_allows_it_records_bounded_content(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.reply_chat("the completion text plugh-9981", usage=oa.usage(5, 5))
    a.reply_chat("short", usage=oa.usage(5, 5))
    plans = {"open": {"models": ["*"], "observe": {"record_content": True}}}
    async with traced(config(a.base_url, b.base_url, plans)) as t:
        key = await t.gw.tenant_key("t1", plan="open")
        r = await t.gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
        assert r.status_code == 200, r.text
        server = request_span(t.spans())
        t.exporter.clear()
        huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}] * 3}
        r = await t.gw.client.post("/v1/chat/completions", json=huge, headers=auth(key))
        assert r.status_code == 200, r.text
        big = request_span(t.spans())
    attrs = server.attributes or {}
    [sent] = orjson.loads(str(attrs["gen_ai.input.messages"]))
    assert sent == {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
    [answer] = orjson.loads(str(attrs["gen_ai.output.messages"]))
    assert answer["parts"] == [{"type": "text", "content": "the completion text plugh-9981"}]
    assert answer["finish_reason"] == "stop"
    assert "farebox.content_truncated" not in attrs
    big_attrs = big.attributes or {}
    assert big_attrs["farebox.content_truncated"] is True
    assert len(str(big_attrs["gen_ai.input.messages"])) < 9_000  # bounded, however big


async def test_a_stream_records_its_text_when_the_plan_allows_it(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.reply_stream(["the streamed ", "text quux-1"], usage=oa.usage(5, 5))
    plans = {"open": {"models": ["*"], "observe": {"record_content": True}}}
    async with traced(config(a.base_url, b.base_url, plans)) as t:
        key = await t.gw.tenant_key("t1", plan="open")
        body = {**CHAT, "stream": True}
        r = await t.gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
        assert r.status_code == 200, r.text
        server = request_span(t.spans())
    attrs = server.attributes or {}
    [answer] = orjson.loads(str(attrs["gen_ai.output.messages"]))
    assert answer == {
        "role": "assistant",
        "parts": [{"type": "text", "content": "the streamed text quux-1"}],
        "finish_reason": "stop",
    }
    assert PROMPT in str(attrs["gen_ai.input.messages"])


async def test_a_request_every_deployment_fails_is_an_error_span(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.failing = b.failing = 503
    _, [entry], spans = await chat_once(traced, config(a.base_url, b.base_url), status=502)
    server = request_span(spans)
    attrs = server.attributes or {}
    assert server.status.status_code is StatusCode.ERROR
    assert attrs["http.response.status_code"] == 502
    assert attrs["error.type"] == entry.error_code == "upstream_error"
    assert attrs["farebox.status"] == "error" and attrs["farebox.cost_usd"] == "0.00"
    attempts = [s for s in children(spans, server) if s.kind is SpanKind.CLIENT]
    assert len(attempts) == 2
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert [(s.attributes or {})["http.response.status_code"] for s in attempts] == [503, 503]


# 5 --------------------------------------------------------------------------------------
async def test_embeddings_are_traced_as_embeddings(traced: Any) -> None:
    async with traced({}) as t:  # the built-in mock provider
        key = await t.gw.tenant_key("t1")
        body = {"model": "text-embedding-3-small", "input": PROMPT}
        r = await t.gw.client.post("/v1/embeddings", json=body, headers=auth(key))
        assert r.status_code == 200, r.text
        spans = t.spans()
        server = request_span(spans)
    assert server.name == "embeddings text-embedding-3-small"
    attrs = server.attributes or {}
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["farebox.cost_usd"] == r.headers["x-farebox-cost-usd"]
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert (attempt.attributes or {})["gen_ai.provider.name"] == "mock"
    assert "xyzzy" not in _recorded_text(spans)


async def test_a_refused_request_has_its_status_and_no_attempt(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    async with traced(config(a.base_url, b.base_url)) as t:
        key = await t.gw.tenant_key("t1")
        body = {**CHAT, "model": "no-such-model"}
        r = await t.gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
        assert r.status_code == 404, r.text
        r = await t.gw.client.post("/v1/chat/completions", json=CHAT, headers=auth("fbx_bad"))
        assert r.status_code == 401, r.text
        spans = t.spans()
    assert not [s for s in spans if s.kind is SpanKind.CLIENT]
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    codes = sorted((s.attributes or {})["http.response.status_code"] for s in servers)
    assert codes == [401, 404]  # the admin API's calls (tenant, key) are not traced
    [route] = [s for s in spans if s.name == "route"]
    assert route.status.status_code is StatusCode.ERROR
    assert (route.attributes or {})["error.type"] == "model_not_found"
    [refused] = [s for s in spans if s.name == "authenticate" and s.status.is_ok is False]
    assert (refused.attributes or {})["error.type"] == "invalid_api_key"
    assert a.calls == b.calls == 0


# 6 --------------------------------------------------------------------------------------
class Buggy(MockProvider):
    """A provider adapter with a bug (not an ``UpstreamError``), whose text echoes the prompt."""

    async def chat(self, request: ChatRequest) -> ChatResult:
        raise RuntimeError(f"bug while handling {request.body['messages']}")


class Stuck(MockProvider):
    """A provider that never answers: the client gives up first."""

    def __init__(self) -> None:
        super().__init__("sim", MockOptions(seed=3))
        self.entered = asyncio.Event()

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")


MOCK_CONFIG = {"providers": {"sim": {"kind": "mock"}}}
MOCK_CHAT = {**CHAT, "model": "gpt-4o-mini"}


async def test_a_bug_in_a_provider_ends_every_span_without_its_text(traced: Any) -> None:
    async with traced(MOCK_CONFIG, {"sim": Buggy("sim", MockOptions(seed=3))}) as t:
        key = await t.gw.tenant_key("t1")
        r = await t.gw.client.post("/v1/chat/completions", json=MOCK_CHAT, headers=auth(key))
        assert r.status_code == 502, r.text
        spans = t.spans()
    server = request_span(spans)
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert attempt.status.status_code is StatusCode.ERROR
    assert (attempt.attributes or {})["error.type"] == "RuntimeError"
    assert server.status.status_code is StatusCode.ERROR
    assert (server.attributes or {})["farebox.status"] == "gateway_error"
    assert "xyzzy" not in _recorded_text(spans)  # the bug's message is left out


async def test_a_client_that_gives_up_mid_call_ends_every_span(traced: Any) -> None:
    stuck = Stuck()
    async with traced(MOCK_CONFIG, {"sim": stuck}) as t:
        key = await t.gw.tenant_key("t1")
        call = asyncio.create_task(
            t.gw.client.post("/v1/chat/completions", json=MOCK_CHAT, headers=auth(key))
        )
        await stuck.entered.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await t.gw.app.state.services.ledger.flush()
        [entry] = await t.gw.ledger("t1")
        spans = t.spans()
    assert entry.status == "client_disconnected"
    server = request_span(spans)
    assert (server.attributes or {})["farebox.status"] == "client_disconnected"
    assert (server.attributes or {})["error.type"] == "cancelled"
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert (attempt.attributes or {})["error.type"] == "cancelled"
    # every span that was started has ended, and belongs to this request
    assert all(s.end_time is not None for s in spans)
    assert {s.name for s in children(spans, server)} == {
        "authenticate",
        "route",
        "admit",
        "chat gpt-4o-mini",
    }


async def test_without_stage_spans_a_failover_still_shows_its_attempts(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.failing = 500
    b.reply_chat("from b", usage=oa.usage(1200, 300))
    settings = {**config(a.base_url, b.base_url), "tracing": {"stages": False}}
    r, _, spans = await chat_once(traced, settings)
    server = request_span(spans)
    assert [s.kind for s in spans] == [SpanKind.CLIENT, SpanKind.CLIENT, SpanKind.SERVER]
    assert [s.status.status_code for s in children(spans, server)] == [
        StatusCode.ERROR, StatusCode.UNSET
    ]  # fmt: skip
    attrs = server.attributes or {}
    assert attrs["farebox.cost_usd"] == r.headers["x-farebox-cost-usd"]
    assert attrs["farebox.tenant"] == "t1" and attrs["gen_ai.usage.output_tokens"] == 300
    assert b.last.headers["traceparent"] == traceparent(spans[1])


async def test_a_sampled_out_request_records_nothing_but_passes_its_context_on(
    traced: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    async with traced({**config(a.base_url, b.base_url), "tracing": {"sample_ratio": 0.0}}) as t:
        key = await t.gw.tenant_key("t1")
        for headers in (auth(key), auth(key, traceparent=unsampled)):
            r = await t.gw.client.post("/v1/chat/completions", json=CHAT, headers=headers)
            assert r.status_code == 200, r.text
        spans = t.spans()
        [entry, _] = await t.gw.ledger("t1")
    assert spans == []  # nothing sampled, nothing exported
    new_root, continued = (request.headers["traceparent"] for request in a.requests)
    assert int(new_root.split("-")[3], 16) & 1 == 0  # not sampled
    assert new_root.split("-")[1] != TRACE_ID
    # the caller's trace goes on, unsampled (from the gateway's own, unrecorded, span)
    assert continued.split("-")[1] == TRACE_ID and continued.endswith("-00")
    assert continued.split("-")[2] != PARENT_ID
    assert entry.status == "ok"
