"""Issue [10]: ``POST /v1/responses`` through the chat-completions request path.

The official ``openai`` SDK (``client.responses``) against the built-in mock and against an
Anthropic-format deployment (a loopback fake speaking the real Messages wire format): plain,
streamed (the documented event order), a function tool and its ``function_call_output`` round
trip; exact cost (the cost header is the list price of the reported usage, and the ledger
agrees); budgets, plan policy and a client that goes away mid-stream, as for chat.

The SDK runs in process over an ASGI transport; the loopback server test is
``test_responses_e2e.py``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from fakes import openai_upstream as oa
from fakes.anthropic_upstream import AnthropicUpstream, text_block, tool_use_block, usage
from farebox.core.money import parse_usd
from farebox.gateway.auth import Principal
from farebox.gateway.pipeline import StreamReply
from farebox.providers.translate_responses import echo_of, responses_request_to_chat
from tests.claude_deployment import claude_gateway
from tests.e2e import gpt_4o_mini_cost

CLAUDE_PICO = {"in": 3_000_000, "out": 15_000_000, "read": 300_000}  # claude-sonnet-4-5
UPGRADE = "https://billing.example.test/upgrade"
PLANS: dict[str, Any] = {
    "pro": {"models": ["*"]},
    "free": {"models": ["gpt-4o-mini"], "tools": {"deny": ["shell.*"]}},
    "slow": {"models": ["*"], "rate_limits": [{"scope": "key", "requests_per_minute": 2}]},
    "tiny": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.000001"}]},
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
EVENT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _openai(gw: Any, key: str) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gw.app))
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://gateway/v1", http_client=http, max_retries=0
    )


def _collapsed(kinds: list[str]) -> list[str]:
    """The event types with runs of the same type collapsed (the deltas)."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


async def test_plain_response_has_headers_usage_and_ledger_entry(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        raw = await client.responses.with_raw_response.create(
            model="gpt-4o-mini",
            instructions="Be brief.",
            input="Say hello",
            metadata={"ticket": "T-1"},
            max_output_tokens=64,
        )
        response = raw.parse()
        request_id = raw.headers["x-farebox-request-id"]
        assert response.id == "resp_" + request_id.removeprefix("req_")
        assert response.object == "response" and response.status == "completed"
        assert response.output_text and response.output[0].type == "message"
        assert response.output[0].content[0].annotations == []
        assert response.instructions == "Be brief." and response.metadata == {"ticket": "T-1"}
        assert response.max_output_tokens == 64
        usage_ = response.usage
        assert usage_ is not None and usage_.input_tokens > 0 and usage_.output_tokens > 0
        assert usage_.total_tokens == usage_.input_tokens + usage_.output_tokens
        assert usage_.input_tokens_details.cached_tokens == 0
        assert usage_.output_tokens_details.reasoning_tokens == 0
        assert raw.headers["x-farebox-model"] == "gpt-4o-mini"
        cost = parse_usd(raw.headers["x-farebox-cost-usd"])
        assert cost == gpt_4o_mini_cost(usage_.input_tokens, usage_.output_tokens) > 0
        assert parse_usd(usage_.model_extra["farebox_cost_usd"]) == cost
        (entry,) = await gw.ledger("acme")
        assert entry.request_id == request_id and entry.endpoint == "responses"
        assert entry.status == "ok" and entry.cost == cost and not entry.stream
        assert entry.input_tokens == usage_.input_tokens


async def test_streamed_response_events_in_documented_order(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        stream = await client.responses.create(
            model="gpt-4o-mini", input="Stream hello", stream=True
        )
        events = [event async for event in stream]
        kinds = [e.type for e in events]
        assert _collapsed(kinds) == EVENT_ORDER
        assert [e.sequence_number for e in events] == list(range(len(events)))
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        done = next(e for e in events if e.type == "response.output_text.done")
        assert deltas and done.text == deltas
        final = events[-1].response
        assert final.status == "completed" and final.output_text == deltas
        assert events[0].response.status == "in_progress" and events[0].response.output == []
        (entry,) = await gw.ledger("acme")
        assert entry.stream and entry.status == "ok" and entry.endpoint == "responses"
        assert final.usage is not None and final.usage.output_tokens == entry.output_tokens
        assert parse_usd(final.usage.model_extra["farebox_cost_usd"]) == entry.cost
        assert entry.cost == gpt_4o_mini_cost(entry.input_tokens, entry.output_tokens) > 0


async def test_sdk_stream_helper_and_function_call_round_trip(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        first = await client.responses.create(
            model="gpt-4o-mini", input="Weather in Oslo?", tools=[WEATHER], tool_choice="required"
        )
        (call,) = [item for item in first.output if item.type == "function_call"]
        assert call.name == "get_weather" and call.call_id and isinstance(call.arguments, str)
        json.loads(call.arguments)
        history: list[Any] = [
            {"role": "user", "content": "Weather in Oslo?"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
        ]
        async with client.responses.stream(
            model="gpt-4o-mini", input=history, tools=[WEATHER]
        ) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_response()
        assert final.status == "completed" and final.output_text
        rows = await gw.ledger("acme")
        assert len(rows) == 2 and {r.endpoint for r in rows} == {"responses"}


async def test_streamed_function_call_events(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        stream = await client.responses.create(
            model="gpt-4o-mini",
            input="Weather?",
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
            stream=True,
        )
        events = [event async for event in stream]
        kinds = _collapsed([e.type for e in events])
        assert "response.function_call_arguments.delta" in kinds
        assert kinds[-3:] == [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
        args = "".join(
            e.delta for e in events if e.type == "response.function_call_arguments.delta"
        )
        calls = [i for i in events[-1].response.output if i.type == "function_call"]
        assert calls and calls[-1].arguments == args and calls[-1].name == "get_weather"


async def test_budget_refusal_is_rate_limit_error_with_upsell(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS, "upgrade_url": UPGRADE}) as gw:
        tiny = _openai(gw, await gw.tenant_key("t", plan="tiny"))
        with pytest.raises(openai.RateLimitError) as broke:
            await tiny.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=50)
        assert broke.value.code == "budget_exceeded"
        body = broke.value.body
        assert isinstance(body, dict) and body["upgrade_url"] == UPGRADE
        assert "Budget exceeded" in body["message"]
        free = _openai(gw, await gw.tenant_key("f", plan="free"))
        with pytest.raises(openai.PermissionDeniedError):
            await free.responses.create(model="gpt-4o", input="hi")
        denied = {**WEATHER, "name": "shell.exec"}
        with pytest.raises(openai.PermissionDeniedError) as tool:
            await free.responses.create(model="gpt-4o-mini", input="hi", tools=[denied])
        assert "shell.exec" in str(tool.value)
        assert await gw.ledger("t") == [] and await gw.ledger("f") == []


async def test_rate_limit_counts_responses_requests(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        slow = _openai(gw, await gw.tenant_key("s", plan="slow"))
        for _ in range(2):
            await slow.responses.create(model="gpt-4o-mini", input="hi")
        with pytest.raises(openai.RateLimitError) as limited:
            await slow.responses.create(model="gpt-4o-mini", input="hi", stream=True)
        headers = limited.value.response.headers
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert int(headers["retry-after"]) >= 1
        rows = await gw.ledger("s")
        assert len(rows) == 2
        # counted for anomaly detection like any other request
        await gw.app.state.watch.flush()
        traffic = [t for t in await gw.store.traffic.since(0) if t.tenant_id == "s"]
        assert sum(t.requests for t in traffic) == 2
        assert sum(t.spend for t in traffic) == sum(r.cost for r in rows) > 0


async def test_plan_limits_name_the_responses_fields(make_gateway: Any) -> None:
    plans = {"capped": {"models": ["*"], "max_tokens": 100, "max_tokens_policy": "reject",
                        "max_input_chars": 2000}}  # fmt: skip
    async with make_gateway({"plans": plans}) as gw:
        client = _openai(gw, await gw.tenant_key("c", plan="capped"))
        with pytest.raises(openai.BadRequestError) as capped:
            await client.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=500)
        assert capped.value.param == "max_output_tokens"
        assert "max_output_tokens 500 exceeds" in capped.value.message
        with pytest.raises(openai.BadRequestError) as big:
            await client.responses.create(model="gpt-4o-mini", input="x" * 5000)
        assert big.value.code == "input_too_large" and big.value.param == "input"
        ok = await client.responses.create(model="gpt-4o-mini", input="hi")
        assert ok.usage is not None and ok.usage.output_tokens <= 100
        (entry,) = await gw.ledger("c")
        assert entry.request_id.removeprefix("req_") == ok.id.removeprefix("resp_")


async def read_then_go_away(gw: Any, request_id: str, native: bool = False) -> bytes:
    """Stream a Responses request of tenant ``t1`` through the gateway (``native``: the
    Responses body goes along, for native deployments), read its first five chunks, then
    close it as the SSE response does when the client goes away; the ledger is flushed. The
    bytes read."""
    await gw.tenant_key("t1")
    services = gw.app.state.services
    tenant = await gw.store.get_tenant("t1")
    [key] = await gw.store.list_keys("t1")
    body = {"model": "gpt-4o-mini", "input": "hello", "stream": True}
    reply = await services.gateway.chat(
        Principal(tenant=tenant, key=key),
        responses_request_to_chat(body),
        request_id,
        flavor="responses",
        echo=echo_of(body),
        responses=body if native else None,
    )
    assert isinstance(reply, StreamReply)
    received = b"".join([await anext(reply.chunks) for _ in range(5)])
    await reply.chunks.aclose()
    await services.ledger.flush()
    return received


async def test_client_disconnect_mid_stream_is_metered(make_gateway: Any) -> None:
    config = {"providers": {"sim": {"kind": "mock", "output_tokens": {"distribution": "fixed",
                                                                      "mean": 50}}}}  # fmt: skip
    async with make_gateway(config) as gw:
        received = await read_then_go_away(gw, "req_gone")
        assert b"event: response.created" in received
        [entry] = await gw.ledger("t1")
        assert entry.request_id == "req_gone" and entry.endpoint == "responses"
        assert entry.status == "client_disconnected" and entry.http_status == 499
        assert entry.output_tokens >= 1


async def test_openai_upstream_gets_chat_fields_and_usage_details_come_back(
    make_gateway: Any,
) -> None:
    async with oa.OpenAIUpstream() as up:
        up.reply_chat('{"answer": 42}', usage=oa.usage(100, 30, cached=60, reasoning=10))
        config = {"providers": {"up": {"kind": "openai", "base_url": up.base_url}}}
        async with make_gateway(config) as gw:
            client = _openai(gw, await gw.tenant_key("t1"))
            schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
            raw = await client.responses.with_raw_response.create(
                model="gpt-4o-mini",
                instructions="Answer in JSON.",
                input=[{"role": "user", "content": [{"type": "input_text", "text": "6 x 7?"}]}],
                text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
                reasoning={"effort": "low"},
                max_output_tokens=200,
                user="end-user-7",
                metadata={"kept": "here"},
            )
            response = raw.parse()
            sent = up.last.json
            assert sent["messages"][0] == {"role": "system", "content": "Answer in JSON."}
            assert sent["messages"][1]["content"] == [{"type": "text", "text": "6 x 7?"}]
            assert sent["response_format"] == {
                "type": "json_schema", "json_schema": {"name": "answer", "schema": schema}
            }  # fmt: skip
            assert sent["reasoning_effort"] == "low" and sent["max_completion_tokens"] == 200
            assert sent["user"] == "end-user-7" and "metadata" not in sent
            assert json.loads(response.output_text) == {"answer": 42}
            assert response.metadata == {"kept": "here"}
            usage_ = response.usage
            assert usage_ is not None
            assert (usage_.input_tokens, usage_.output_tokens) == (100, 30)
            assert usage_.input_tokens_details.cached_tokens == 60
            assert usage_.output_tokens_details.reasoning_tokens == 10
            # gpt-4o-mini: 40 uncached at 0.15, 60 cached at 0.075, 30 out at 0.60 per 1M
            expected = 40 * 150_000 + 60 * 75_000 + 30 * 600_000
            assert parse_usd(raw.headers["x-farebox-cost-usd"]) == expected
            (entry,) = await gw.ledger("t1")
            assert entry.cost == expected and entry.user == "end-user-7"


async def test_upstream_cut_mid_stream_ends_with_response_failed(make_gateway: Any) -> None:
    async with oa.OpenAIUpstream() as up:
        up.reply_stream(["Hello", " there", " friend"], usage=oa.usage(9, 3), disconnect_after=3)
        config = {"providers": {"up": {"kind": "openai", "base_url": up.base_url}}}
        async with make_gateway(config) as gw:
            client = _openai(gw, await gw.tenant_key("t1"))
            stream = await client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
            events = [event async for event in stream]
            assert events[-1].type == "response.failed"
            assert events[-1].response.status == "failed" and events[-1].response.error.message
            assert [e.sequence_number for e in events] == list(range(len(events)))
            [entry] = await gw.ledger("t1")
            assert entry.status == "upstream_interrupted" and entry.endpoint == "responses"


# --- an Anthropic-format deployment -------------------------------------------------------


@pytest.fixture
async def on_claude(make_gateway: Any, claude: AnthropicUpstream) -> Any:
    """A gateway whose ``smart`` is on the fake Anthropic upstream, and a client on plan pro."""
    async with claude_gateway(make_gateway, claude, PLANS) as gw:
        yield gw, _openai(gw, await gw.tenant_key("acme", plan="pro"))


async def test_anthropic_deployment_function_call_round_trip(
    on_claude: tuple[Any, openai.AsyncOpenAI], claude: AnthropicUpstream
) -> None:
    gw, client = on_claude
    claude.reply_message(
        [
            text_block("Let me check."),
            tool_use_block("toolu_1", "get_weather", {"city": "Oslo"}),
        ],
        usage=usage(100, 20, read=40),
        stop_reason="tool_use",
    )
    raw = await client.responses.with_raw_response.create(
        model="smart", instructions="Be brief.", input="Weather in Oslo?", tools=[WEATHER]
    )
    first = raw.parse()
    sent = claude.last.json
    assert sent["system"] == "Be brief." and sent["tools"][0]["name"] == "get_weather"
    assert [i.type for i in first.output] == ["message", "function_call"]
    call = first.output[1]
    assert call.call_id == "toolu_1" and json.loads(call.arguments) == {"city": "Oslo"}
    assert first.usage.input_tokens == 140 and first.usage.output_tokens == 20
    assert first.usage.input_tokens_details.cached_tokens == 40
    expected = 100 * CLAUDE_PICO["in"] + 40 * CLAUDE_PICO["read"] + 20 * CLAUDE_PICO["out"]
    assert parse_usd(raw.headers["x-farebox-cost-usd"]) == expected

    claude.reply_stream(["Sun", "ny"], start_usage=usage(50, 1),
                        delta_usages=({"output_tokens": 30},))  # fmt: skip
    history: list[Any] = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": "toolu_1", "output": "21 C"},
    ]
    stream = await client.responses.create(
        model="smart", input=history, tools=[WEATHER], stream=True
    )
    events = [event async for event in stream]
    sent = claude.last.json
    assistant, result = sent["messages"][1], sent["messages"][2]
    assert assistant["role"] == "assistant"
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                "input": {"city": "Oslo"}}  # fmt: skip
    assert assistant["content"][-1] == tool_use
    assert result["content"][0]["type"] == "tool_result"
    assert result["content"][0]["tool_use_id"] == "toolu_1"
    assert _collapsed([e.type for e in events]) == EVENT_ORDER
    final = events[-1].response
    assert final.output_text == "Sunny" and final.usage.output_tokens == 30
    cost = parse_usd(final.usage.model_extra["farebox_cost_usd"])
    assert cost == 50 * CLAUDE_PICO["in"] + 30 * CLAUDE_PICO["out"]
    ledger = await gw.ledger("acme")
    assert sorted(e.cost for e in ledger) == sorted([expected, cost])


async def test_anthropic_deployment_streams_a_function_call(
    on_claude: tuple[Any, openai.AsyncOpenAI], claude: AnthropicUpstream
) -> None:
    gw, client = on_claude
    claude.reply_stream(
        ["Checking."],
        tools=[("toolu_5", "get_weather", ['{"city":', ' "Bergen"}'])],
        start_usage=usage(40, 1),
        delta_usages=({"output_tokens": 25},),
    )
    stream = await client.responses.create(
        model="smart", input="Weather in Bergen?", tools=[WEATHER], stream=True
    )
    events = [event async for event in stream]
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert [i.type for i in final.output] == ["message", "function_call"]
    call = final.output[1]
    assert call.call_id == "toolu_5" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Bergen"}
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == call.arguments
    (entry,) = await gw.ledger("acme")
    assert entry.cost == 40 * CLAUDE_PICO["in"] + 25 * CLAUDE_PICO["out"]
    assert parse_usd(final.usage.model_extra["farebox_cost_usd"]) == entry.cost


async def test_responses_entries_reach_a_billing_sink_exactly(make_gateway: Any) -> None:
    from fakes.billing import WebhookFake
    from tests.test_billing_export import drain, expected, held

    secret = b"whsec-responses"
    async with WebhookFake(secret) as hook:
        sink = {"kind": "webhook", "base_url": hook.root_url + "/hooks/billing",
                "secret": "env:HOOK_SECRET"}  # fmt: skip
        config = {"plans": PLANS, "billing": {"in_serve": False, "sinks": {"hook": sink}}}
        async with make_gateway(config, env={"HOOK_SECRET": secret.decode()}) as gw:
            client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
            await client.responses.create(model="gpt-4o-mini", input="bill me")
            stream = await client.responses.create(model="gpt-4o-mini", input="me too", stream=True)
            assert [e async for e in stream][-1].type == "response.completed"
            want = await expected(gw)
            assert len(want) >= 2 * 3  # requests, tokens, cost per entry at least
            await drain(gw, "hook")
            assert held("webhook", hook) == want
