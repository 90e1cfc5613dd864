"""Traces leave the gateway over OTLP/HTTP: a loopback receiver (``fakes.otlp_receiver``)
decodes what the real exporter sends. Also: tracing is off by default, a missing
``farebox[otel]`` is a clear start-up error, and no incoming trace header can break a request.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conftest import ADMIN_KEY
from fakes.otlp_receiver import OtlpReceiver
from farebox.app import create_app
from farebox.config.observe import TracingConfig
from farebox.config.settings import parse_settings
from farebox.errors import ConfigError
from farebox.observe.traces import build_tracing, trace_carrier
from tests.e2e import create_tenant_key, serve, write_config

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
OTLP_SPAN_KIND_SERVER, OTLP_SPAN_KIND_CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


async def test_a_loopback_otlp_receiver_gets_the_spans(make_gateway: Any) -> None:
    async with OtlpReceiver() as receiver:
        tracing = {"enabled": True, "endpoint": receiver.endpoint, "service_name": "fbx-test"}
        async with make_gateway({"tracing": tracing}) as gw:
            key = await gw.tenant_key("t1")
            headers = {"Authorization": f"Bearer {key}"}
            r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=headers)
            assert r.status_code == 200, r.text
            cost = r.headers["x-farebox-cost-usd"]
            assert (await gw.client.get("/healthz")).status_code == 200  # a probe: not traced
        # the app has stopped: its tracing flushed every span to the receiver on the way out
    assert receiver.requests, "nothing was exported"
    assert set(receiver.content_types) == {"application/x-protobuf"}
    assert {r["service.name"] for r in receiver.resources()} == {"fbx-test"}
    spans = receiver.spans
    assert not [s for s in spans if "healthz" in s.name]
    [server] = [s for s in spans if s.kind == OTLP_SPAN_KIND_SERVER]
    assert server.name == "chat gpt-4o-mini"
    attrs = {a.key: a.value for a in server.attributes}
    assert attrs["gen_ai.operation.name"].string_value == "chat"
    assert attrs["farebox.cost_usd"].string_value == cost
    assert attrs["farebox.tenant"].string_value == "t1"
    assert attrs["gen_ai.usage.output_tokens"].int_value > 0
    [attempt] = [s for s in spans if s.kind == OTLP_SPAN_KIND_CLIENT]
    assert attempt.trace_id == server.trace_id and attempt.parent_span_id == server.span_id
    names = {s.name for s in spans if s.parent_span_id == server.span_id}
    assert names == {"authenticate", "route", "admit", "settle", "chat gpt-4o-mini"}


async def test_a_served_gateway_honours_traceparent_and_exports(tmp_path: Path) -> None:
    """The real server (``farebox serve``: uvicorn's raw headers) and the real exporter."""
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with OtlpReceiver() as receiver:
        tracing = {"enabled": True, "endpoint": receiver.endpoint}
        config = write_config(tmp_path, tracing=tracing)

        def drive() -> None:
            with serve(config, cwd=tmp_path) as server:
                key = create_tenant_key(server.base_url, "t1", "pro")
                headers = {"Authorization": f"Bearer {key}",
                           "traceparent": f"00-{trace_id}-{parent_id}-01"}  # fmt: skip
                for stream in (False, True):
                    r = httpx.post(f"{server.base_url}/v1/chat/completions",
                                   json={**CHAT, "stream": stream}, headers=headers)  # fmt: skip
                    assert r.status_code == 200, r.text
            # stopped (SIGTERM): its last spans were flushed on the way out

        await asyncio.to_thread(drive)  # the receiver's loop stays free to answer the exporter
    servers = [s for s in receiver.spans if s.kind == OTLP_SPAN_KIND_SERVER]
    assert [s.name for s in servers] == ["chat gpt-4o-mini"] * 2
    for server in servers:
        assert server.trace_id.hex() == trace_id and server.parent_span_id.hex() == parent_id
        attrs = {a.key: a.value for a in server.attributes}
        assert attrs["gen_ai.usage.input_tokens"].int_value > 0
        assert attrs["farebox.status"].string_value == "ok"
    attempts = [s for s in receiver.spans if s.kind == OTLP_SPAN_KIND_CLIENT]
    assert {s.parent_span_id for s in attempts} == {s.span_id for s in servers}


async def test_tracing_is_off_by_default(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        services = gw.app.state.services
        assert services.tracing is None and gw.app.tracing is None
        assert services.gateway._tracing is None
        key = await gw.tenant_key("t1")
        r = await gw.client.post(
            "/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {key}", "traceparent": "00-" + "1" * 32 + "-"},
        )
        assert r.status_code == 200, r.text
    assert build_tracing(TracingConfig()) is None


def test_tracing_without_the_package_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # as if opentelemetry were not installed: importing it (or a module that does) fails
    for name in list(sys.modules):
        if name.startswith("farebox.observe.traces_"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    data = {"database": f"sqlite:///{tmp_path / 'f.db'}", "tracing": {"enabled": True}}
    settings = parse_settings(data, source="farebox.yaml", env={"FAREBOX_ADMIN_KEY": ADMIN_KEY},
                              base_dir=tmp_path)  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        create_app(settings, announce=lambda _m: None)
    message = str(raised.value)
    assert "pip install 'farebox[otel]'" in message and "tracing" in message
    assert "farebox.yaml" in message


def test_the_trace_carrier_is_read_from_raw_headers() -> None:
    raw = [
        (b"authorization", b"Bearer x"),
        (b"traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
        (b"tracestate", b"k=v"),
    ]
    assert trace_carrier(raw) == {
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "tracestate": "k=v",
    }
    assert trace_carrier([(b"authorization", b"Bearer x")]) is None


latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)
hexes = st.text("0123456789abcdefABCDEF-", min_size=0, max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    parent=st.one_of(latin1, hexes.map(lambda h: "00-" + h)),
    state=st.one_of(st.none(), latin1),
)
def test_no_incoming_trace_header_breaks_a_request_span(parent: str, state: str | None) -> None:
    exporter = InMemorySpanExporter()
    tracing = build_tracing(TracingConfig(), exporter=exporter)
    assert tracing is not None
    carrier = {"traceparent": parent, **({"tracestate": state} if state is not None else {})}
    with tracing.server("POST", "/v1/chat/completions", carrier) as span:
        span.status(200)
    tracing._provider.shutdown()  # no processor was started: nothing to flush, nothing leaks
    context = span.span.get_span_context()
    assert context.is_valid  # a span of its own, whether the header was a valid parent or not
    parent_context = span.span.parent  # type: ignore[attr-defined]
    if parent_context is not None:  # honoured: only a well-formed traceparent is
        assert parent.startswith("00-") and f"{parent_context.trace_id:032x}" in parent.lower()
    assert span.span.kind is SpanKind.SERVER
