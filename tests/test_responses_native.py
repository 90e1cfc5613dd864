"""Issue [10]: ``POST /v1/responses`` served natively by an ``openai`` deployment whose upstream
speaks the Responses API (``responses: native``), and translated for any other deployment.

The official ``openai`` SDK (``client.responses``, in process over an ASGI transport) against a
loopback fake upstream speaking the real Responses wire format (``fakes.responses_upstream``):
what the upstream receives (the client's request with the deployment's model, ``store: false``,
no ``previous_response_id``, the stored history expanded in ``input``), what the client gets
back (the upstream's output items as they are, Farebox's id, cost and headers), metering,
stored responses, failover across formats, and a stream that fails midway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakes import openai_upstream as oa
from fakes.responses_upstream import (
    ResponsesUpstream,
    events,
    function_call,
    message,
    reasoning,
    usage,
)
from farebox.config.settings import parse_settings
from farebox.core.money import parse_usd
from farebox.core.pricing import cost
from farebox.core.usage import MAX_TOKENS, TOKEN_FIELDS, from_responses, token_counts
from farebox.errors import ConfigError
from tests.test_money import CATALOG, OPENAI_MODELS, openai_hand_cost
from tests.test_responses_api import _openai, read_then_go_away

# gpt-4o-mini list prices, pico-USD per token: input, cached input, output
IN, CACHED, OUT = 150_000, 75_000, 600_000
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _config(up: ResponsesUpstream, *deployments: str, **more: Any) -> dict[str, Any]:
    """``gpt-4o-mini`` served by ``deployments`` in order: ``native`` (the fake's Responses
    endpoint), ``chat`` (the same fake, translated to chat completions) or ``sim`` (the mock)."""
    providers: dict[str, Any] = {
        "native": {"kind": "openai", "base_url": up.base_url, "responses": "native"},
        "chat": {"kind": "openai", "base_url": up.base_url},
        "sim": {"kind": "mock"},
    }
    price = {"input": "0.15", "cached_input": "0.075", "output": "0.60"}  # per 1M tokens
    models = {"gpt-4o-mini": [{"provider": name, "model": "gpt-4o-mini-2024-07-18",
                               "price": price} for name in deployments]}  # fmt: skip
    return {"providers": providers, "models": models, "plans": {"pro": {"models": ["*"]}},
            "routing": {"backoff_s": 0.0}, **more}  # fmt: skip


@pytest.fixture
async def up() -> AsyncIterator[ResponsesUpstream]:
    async with ResponsesUpstream() as upstream:
        yield upstream


def _ours(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


async def test_plain_answer_is_the_upstreams_with_our_id_cost_and_ledger_entry(
    make_gateway: Any, up: ResponsesUpstream
) -> None:
    up.reply_response([reasoning("Ada asked."), message("Hello Ada")],
                      usage=usage(100, 30, cached=60, reasoning=10))  # fmt: skip
    async with make_gateway(_config(up, "native")) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        raw = await client.responses.with_raw_response.create(
            model="gpt-4o-mini",
            instructions="Be brief.",
            input="Hello, I am Ada",
            max_output_tokens=200,
            metadata={"ticket": "T-1"},
            include=["reasoning.encrypted_content"],
        )
        response = raw.parse()
        sent = up.last.json
        assert up.last.path == "/v1/responses" and up.calls == 1
        assert sent["model"] == "gpt-4o-mini-2024-07-18" and sent["input"] == "Hello, I am Ada"
        assert sent["store"] is False and sent["stream"] is False
        assert "previous_response_id" not in sent and sent["max_output_tokens"] == 200
        assert sent["instructions"] == "Be brief." and sent["metadata"] == {"ticket": "T-1"}
        assert sent["include"] == ["reasoning.encrypted_content"]
        request_id = raw.headers["x-farebox-request-id"]
        assert response.id == _ours(request_id) and response.store is True
        assert [i.type for i in response.output] == ["reasoning", "message"]
        assert response.output[0].id == "rs_up_1"
        assert response.output[0].summary[0].text == "Ada asked."
        assert response.output_text == "Hello Ada"
        assert raw.headers["x-farebox-model"] == "gpt-4o-mini-2024-07-18"
        expected = 40 * IN + 60 * CACHED + 30 * OUT
        cost = parse_usd(raw.headers["x-farebox-cost-usd"])
        assert cost == expected and response.usage is not None
        assert parse_usd(response.usage.model_extra["farebox_cost_usd"]) == cost
        assert response.usage.output_tokens_details.reasoning_tokens == 10
        (entry,) = await gw.ledger("acme")
        assert entry.request_id == request_id and entry.endpoint == "responses"
        assert entry.status == "ok" and entry.provider == "native" and entry.cost == expected
        assert (entry.input_tokens, entry.cached_input_tokens) == (100, 60)
        assert (entry.output_tokens, entry.reasoning_tokens) == (30, 10)
        assert entry.usage_source == "provider" and not entry.stream
        kept = await client.responses.retrieve(response.id)
        assert [i.type for i in kept.output] == ["reasoning", "message"]


async def test_stream_passes_the_upstreams_events_on_ending_with_our_cost(
    make_gateway: Any, up: ResponsesUpstream
) -> None:
    output = [reasoning(), message("Hel", "lo", " there")]
    up.reply_events(output, usage=usage(20, 7, reasoning=2))
    async with make_gateway(_config(up, "native")) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        raw = await client.responses.with_raw_response.create(
            model="gpt-4o-mini", input="Stream hello", stream=True
        )
        got = [event async for event in raw.parse()]
        sent = up.last.json
        assert sent["stream"] is True and sent["store"] is False
        assert [e.type for e in got] == [e["type"] for e in events(output, usage())]
        assert [e.sequence_number for e in got] == list(range(len(got)))
        ours = _ours(raw.headers["x-farebox-request-id"])
        assert got[0].response.id == got[1].response.id == got[-1].response.id == ours
        deltas = "".join(e.delta for e in got if e.type == "response.output_text.delta")
        final = got[-1].response
        assert got[-1].type == "response.completed" and final.output_text == deltas
        assert final.output[0].type == "reasoning" and final.usage is not None
        (entry,) = await gw.ledger("acme")
        assert entry.stream and entry.status == "ok" and entry.endpoint == "responses"
        assert (entry.input_tokens, entry.output_tokens, entry.reasoning_tokens) == (20, 7, 2)
        assert entry.cost == 20 * IN + 7 * OUT == parse_usd(final.usage.model_extra[
            "farebox_cost_usd"])  # fmt: skip
        assert entry.ttft_ms is not None and entry.usage_source == "provider"


async def test_function_call_round_trip_drops_unresolvable_reasoning(
    make_gateway: Any, up: ResponsesUpstream
) -> None:
    up.reply_response([reasoning(), function_call("call_7", "get_weather", {"city": "Oslo"})])
    async with make_gateway(_config(up, "native")) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        first = await client.responses.create(
            model="gpt-4o-mini", input="Weather in Oslo?", tools=[WEATHER], store=False
        )
        assert [i.type for i in first.output] == ["reasoning", "function_call"]
        assert first.output[1].call_id == "call_7" and first.store is False
        sealed = {"type": "reasoning", "id": "rs_sealed", "summary": [],
                  "encrypted_content": "gAAAA-opaque"}  # fmt: skip
        history: list[Any] = [
            {"role": "user", "content": "Weather in Oslo?"},
            sealed,
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": "call_7", "output": "Sunny, 21 C"},
        ]
        up.reply_response([message("Sunny in Oslo.")])
        second = await client.responses.create(
            model="gpt-4o-mini", input=history, tools=[WEATHER], store=False
        )
        sent = up.last.json
        assert [i.get("type", "message") for i in sent["input"]] == [
            "message", "reasoning", "function_call", "function_call_output"
        ]  # fmt: skip
        assert sent["input"][1] == sealed and sent["input"][2]["call_id"] == "call_7"
        assert sent["tools"] == [WEATHER] and sent["store"] is False
        assert second.output_text == "Sunny in Oslo."
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(second.id)


async def test_three_turn_chain_sends_the_history_not_the_id(
    make_gateway: Any, up: ResponsesUpstream
) -> None:
    async with make_gateway(_config(up, "native")) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        up.reply_response([reasoning(), message("Hi Ada.")])
        one = await client.responses.create(model="gpt-4o-mini", input="I am Ada.")
        up.reply_events([message("Noted, ", "blue.")])
        stream = await client.responses.create(
            model="gpt-4o-mini", input="I like blue.", previous_response_id=one.id, stream=True
        )
        two = [event async for event in stream][-1].response
        up.reply_response([message("You are Ada; you like blue.")])
        three = await client.responses.create(
            model="gpt-4o-mini", input="Who am I?", previous_response_id=two.id
        )
        sent = up.last.json
        assert sent["store"] is False and "previous_response_id" not in sent
        said = [(i["role"], _text(i["content"])) for i in sent["input"]]
        assert said == [
            ("user", "I am Ada."),
            ("assistant", "Hi Ada."),
            ("user", "I like blue."),
            ("assistant", "Noted, blue."),
            ("user", "Who am I?"),
        ]
        assert three.previous_response_id == two.id and three.store is True
        kept = await client.responses.retrieve(three.id)
        assert kept.output_text == "You are Ada; you like blue."
        assert len(await gw.ledger("acme")) == 3


def _text(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


async def test_failover_crosses_formats_both_ways(make_gateway: Any, up: ResponsesUpstream) -> None:
    async with make_gateway(_config(up, "native", "sim")) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        up.reply_error(503, "The engine is currently overloaded", type="server_error")
        raw = await client.responses.with_raw_response.create(model="gpt-4o-mini", input="hi")
        served = raw.parse()
        assert up.last.path == "/v1/responses" and served.output_text
        assert served.id == _ours(raw.headers["x-farebox-request-id"])
        (entry,) = await gw.ledger("acme")
        assert entry.provider == "sim" and entry.status == "ok"
    async with make_gateway(_config(up, "chat", "native")) as gw:  # the same database
        client = _openai(gw, await gw.tenant_key("back", plan="pro"))
        up.reply_error(500, "The server had an error", type="server_error")
        up.reply_events([message("Nat", "ive")], usage=usage(12, 2))
        stream = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
        got = [event async for event in stream]
        paths = [r.path for r in up.requests[-2:]]
        assert paths == ["/v1/chat/completions", "/v1/responses"]
        assert got[-1].type == "response.completed" and got[-1].response.output_text == "Native"
        (entry,) = await gw.ledger("back")
        assert entry.provider == "native" and entry.cost == 12 * IN + 2 * OUT


async def test_upstream_failure_mid_stream_ends_with_response_failed(
    make_gateway: Any, up: ResponsesUpstream
) -> None:
    async with make_gateway(_config(up, "native")) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        for cut in ({"fail_after": 6}, {"disconnect_after": 6}):
            up.reply_events([message("Hello", " there", " friend")], **cut)
            stream = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
            got = [event async for event in stream]
            assert got[-1].type == "response.failed" and got[-1].response.error.message
            assert got[-1].response.status == "failed"
            assert got[-1].response.id == got[0].response.id
            assert [e.sequence_number for e in got] == list(range(len(got)))
        entries = await gw.ledger("acme")
        assert [e.status for e in entries] == ["upstream_interrupted"] * 2
        assert {e.usage_source for e in entries} == {"estimated"}
        assert all(e.output_tokens >= 1 and e.input_tokens >= 1 for e in entries)


async def test_upstream_refusal_and_a_cut_answer_reach_the_client_as_the_upstream_said(
    make_gateway: Any, up: ResponsesUpstream
) -> None:
    async with make_gateway(_config(up, "native", "sim")) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        up.reply_error(400, "Invalid value for 'text.format'", code="invalid_value")
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="gpt-4o-mini", input="hi")
        assert "Invalid value for 'text.format'" in refused.value.message
        up.reply_events([message("Once upon")], usage=usage(9, 16), cut=True)
        stream = await client.responses.create(
            model="gpt-4o-mini", input="A story", max_output_tokens=16, stream=True
        )
        got = [event async for event in stream]
        assert up.last.json["max_output_tokens"] == 16 and up.calls == 2
        final = got[-1].response
        assert got[-1].type == "response.incomplete" and final.status == "incomplete"
        assert final.incomplete_details is not None
        assert final.incomplete_details.reason == "max_output_tokens"
        by_status = {entry.status: entry for entry in await gw.ledger("acme")}
        refusal, cut = by_status["error"], by_status["ok"]
        assert (refusal.http_status, refusal.cost) == (400, 0) and len(by_status) == 2
        assert cut.status == "ok" and cut.cost == 9 * IN + 16 * OUT
        assert parse_usd(final.usage.model_extra["farebox_cost_usd"]) == cut.cost


async def test_client_gone_mid_stream_is_metered(make_gateway: Any, up: ResponsesUpstream) -> None:
    async with make_gateway(_config(up, "native")) as gw:
        up.reply_events([message("Hello", " there")], stop_after=5, hold=True)
        received = await read_then_go_away(gw, "req_gone", native=True)
        assert b"event: response.output_text.delta" in received
        [entry] = await gw.ledger("t1")
        assert entry.status == "client_disconnected" and entry.http_status == 499
        assert entry.provider == "native" and entry.output_tokens >= 1


async def test_translated_deployments_are_unchanged(
    make_gateway: Any, up: ResponsesUpstream
) -> None:
    up.reply_chat("Translated", usage=oa.usage(9, 2))
    async with make_gateway(_config(up, "chat")) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        response = await client.responses.create(model="gpt-4o-mini", input="hi")
        assert up.last.path == "/v1/chat/completions" and response.output_text == "Translated"


@pytest.mark.parametrize("kind", ["anthropic", "mock"])
def test_native_needs_an_openai_provider(kind: str) -> None:
    data = {"providers": {"other": {"kind": kind, "responses": "native"}}}
    with pytest.raises(ConfigError, match=r"providers\.other\.responses: 'native' needs kind"):
        parse_settings(data, source="farebox.yaml", env={}, base_dir=Path("."))


@given(st.text(max_size=20).filter(lambda s: s not in ("native", "translate")))
def test_responses_mode_is_native_or_translate(mode: str) -> None:
    data = {"providers": {"up": {"kind": "openai", "responses": mode}}}
    with pytest.raises(ConfigError, match=r"providers\.up\.responses"):
        parse_settings(data, source="farebox.yaml", env={}, base_dir=Path("."))


@given(
    st.sampled_from(OPENAI_MODELS),
    st.integers(0, 10**9),
    st.floats(0, 1),
    st.integers(0, 10**9),
    st.floats(0, 1),
)
def test_responses_usage_costs_the_hand_formula(
    model: str, input_: int, cached_share: float, output: int, reasoning_share: float
) -> None:
    cached, reasoning = int(input_ * cached_share), int(output * reasoning_share)
    got = from_responses(usage(input_, output, cached=cached, reasoning=reasoning))
    assert (got.cached_input_tokens, got.reasoning_tokens) == (cached, reasoning)
    assert cost(got, CATALOG.prices[model]) == openai_hand_cost(model, input_, cached, output)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=25), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


@given(st.dictionaries(st.sampled_from(list(usage())), JSONISH) | JSONISH)
def test_any_upstream_usage_gives_counts_in_range(raw: Any) -> None:
    counts = token_counts(from_responses(raw))
    assert set(counts) == set(TOKEN_FIELDS)
    assert all(0 <= n <= MAX_TOKENS for n in counts.values())


async def test_what_only_a_native_deployment_gives_skips_the_translated_ones(
    make_gateway: Any, up: ResponsesUpstream
) -> None:
    """``include: reasoning.encrypted_content`` and a ``detailed`` summary have no place in a
    chat-completions answer: the mock (first in order) is passed over for the native
    deployment, and a model with no native deployment refuses them with a 400 naming them."""
    up.reply_response([reasoning("Thought."), message("Hi")], usage=usage(10, 5))
    config = _config(up, "sim", "native")
    config["models"]["mock-only"] = [{"provider": "sim", "model": "gpt-4o-mini"}]
    async with make_gateway(config) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        response = await client.responses.create(
            model="gpt-4o-mini",
            input="hi",
            include=["reasoning.encrypted_content"],
            reasoning={"summary": "detailed"},
        )
        assert up.calls == 1 and up.last.json["reasoning"] == {"summary": "detailed"}
        assert [i.type for i in response.output] == ["reasoning", "message"]
        (entry,) = await gw.ledger("acme")
        assert entry.provider == "native"
        for asked, param in (
            ({"include": ["reasoning.encrypted_content"]}, "include[0]"),
            ({"reasoning": {"summary": "concise"}}, "reasoning.summary"),
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                await client.responses.create(model="mock-only", input="hi", **asked)
            assert caught.value.param == param  # type: ignore[attr-defined]
            assert "responses: native" in caught.value.message
        assert up.calls == 1 and len(await gw.ledger("acme")) == 1
