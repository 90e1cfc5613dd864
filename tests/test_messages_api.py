"""Issue [4], acceptance 2 and 4: both official SDKs, both directions, same rules everywhere.

- The ``anthropic`` SDK against ``POST /v1/messages`` (served by an OpenAI-format deployment,
  the built-in mock), streamed and not.
- The ``openai`` SDK against an alias whose only deployment is Anthropic-format (a loopback
  fake speaking the real Messages wire format), streamed and not, with a tool call.
- Cost is exact both ways; budgets, rate limits and plan policy answer the same on
  ``/v1/messages``, in Anthropic's error format.

The SDKs run in process over an ASGI transport of their own HTTP library (``httpx2``).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from fakes.anthropic_upstream import AnthropicUpstream, text_block, tool_use_block, usage
from farebox.core.money import parse_usd
from tests.claude_deployment import claude_gateway

PICO_PER_TOKEN = {"in": 3_000_000, "out": 15_000_000, "read": 300_000}  # claude-sonnet-4-5
PLANS: dict[str, Any] = {
    "pro": {"models": ["*"]},
    "free": {
        "models": ["gpt-4o-mini"],
        "rate_limits": [{"scope": "key", "requests_per_minute": 2}],
        "tools": {"deny": ["shell.*"], "require_approval": ["payments.*"]},
    },
    "tiny": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.000001"}]},
}


def _http(gw: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gw.app))


def _anthropic(gw: Any, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key=key, base_url="http://gateway", http_client=_http(gw), max_retries=0
    )


def _openai(gw: Any, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://gateway/v1", http_client=_http(gw), max_retries=0
    )


async def test_anthropic_sdk_on_v1_messages_streamed_and_not(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        key = await gw.tenant_key("acme", plan="pro")
        client = _anthropic(gw, key)
        raw = await client.messages.with_raw_response.create(
            model="gpt-4o-mini",
            max_tokens=64,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say hello"}],
        )
        message = await raw.parse()
        assert message.type == "message" and message.role == "assistant"
        assert message.content[0].type == "text" and message.content[0].text
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        request_id = raw.headers["x-farebox-request-id"]
        assert message.id == "msg_" + request_id.removeprefix("req_")
        async with client.messages.stream(
            model="gpt-4o-mini",
            max_tokens=64,
            messages=[{"role": "user", "content": "Stream hello"}],
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert text and final.content[0].text == text
        assert final.usage.output_tokens > 0
        rows = {e.request_id: e for e in await gw.ledger("acme")}
        assert len(rows) == 2 and {e.endpoint for e in rows.values()} == {"messages"}
        first = rows[request_id]
        assert parse_usd(raw.headers["x-farebox-cost-usd"]) == first.cost > 0
        assert first.output_tokens == message.usage.output_tokens
        streamed = next(e for e in rows.values() if e.stream)
        assert streamed.output_tokens == final.usage.output_tokens and streamed.status == "ok"


async def test_openai_sdk_on_an_anthropic_only_alias(
    make_gateway: Any, claude: AnthropicUpstream
) -> None:
    async with claude_gateway(make_gateway, claude, PLANS) as gw:
        key = await gw.tenant_key("acme", plan="pro")
        client = _openai(gw, key)
        claude.reply_message(
            [
                text_block("Let me check."),
                tool_use_block("toolu_1", "get_weather", {"city": "Oslo"}),
            ],
            usage=usage(100, 20, read=40),
            stop_reason="tool_use",
        )
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
        raw = await client.chat.completions.with_raw_response.create(
            model="smart", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=tools
        )
        completion = raw.parse()
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        call = choice.message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Oslo"}
        sent = claude.last.json
        assert sent["tools"][0]["name"] == "get_weather" and sent["model"] == "claude-sonnet-4-5"
        # exact cost: 100 uncached input, 40 cache reads, 20 output at the catalog price
        expected = 100 * PICO_PER_TOKEN["in"] + 40 * PICO_PER_TOKEN["read"]
        expected += 20 * PICO_PER_TOKEN["out"]
        assert parse_usd(raw.headers["x-farebox-cost-usd"]) == expected
        assert completion.usage.prompt_tokens == 140 and completion.usage.completion_tokens == 20

        claude.reply_stream(
            ["Sun", "ny"],
            tools=[("toolu_2", "get_weather", ['{"city":', ' "Bergen"}'])],
            start_usage=usage(50, 1),
            delta_usages=({"output_tokens": 30},),
        )
        stream = await client.chat.completions.create(
            model="smart",
            messages=[{"role": "user", "content": "And Bergen?"}],
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, args, usage_chunk = "", "", None
        async for chunk in stream:
            if chunk.usage is not None:
                usage_chunk = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                for tc in c.delta.tool_calls or []:
                    args += tc.function.arguments or ""
        assert text == "Sunny" and json.loads(args) == {"city": "Bergen"}
        assert usage_chunk is not None and usage_chunk.completion_tokens == 30
        cost = parse_usd(usage_chunk.model_extra["farebox_cost_usd"])
        assert cost == 50 * PICO_PER_TOKEN["in"] + 30 * PICO_PER_TOKEN["out"]
        ledger = await gw.ledger("acme")
        assert sorted(e.cost for e in ledger) == sorted([expected, cost])


async def test_anthropic_sdk_tool_use_through_an_anthropic_deployment(
    make_gateway: Any, claude: AnthropicUpstream
) -> None:
    """Anthropic in, Anthropic out, through the OpenAI-shaped path in between."""
    async with claude_gateway(make_gateway, claude, PLANS) as gw:
        key = await gw.tenant_key("acme", plan="pro")
        claude.reply_message(
            [tool_use_block("toolu_9", "lookup", {"id": 7})],
            usage=usage(30, 12),
            stop_reason="tool_use",
        )
        message = await _anthropic(gw, key).messages.create(
            model="smart",
            max_tokens=100,
            messages=[{"role": "user", "content": "look up 7"}],
            tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        )
        block = message.content[0]
        assert block.type == "tool_use" and block.name == "lookup" and block.input == {"id": 7}
        assert message.stop_reason == "tool_use"
        assert message.usage.input_tokens == 30 and message.usage.output_tokens == 12
        (entry,) = await gw.ledger("acme")
        assert entry.cost == 30 * PICO_PER_TOKEN["in"] + 12 * PICO_PER_TOKEN["out"]


async def test_same_rules_on_v1_messages(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        free = _anthropic(gw, await gw.tenant_key("f", plan="free"))
        hello = [{"role": "user", "content": "hi"}]
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            await free.messages.create(model="gpt-4o", max_tokens=10, messages=hello)
        assert denied.value.body["error"]["type"] == "permission_error"
        assert "gpt-4o-mini" in denied.value.body["error"]["message"]
        with pytest.raises(anthropic.PermissionDeniedError) as tool:
            await free.messages.create(
                model="gpt-4o-mini", max_tokens=10, messages=hello,
                tools=[{"name": "shell.exec", "input_schema": {"type": "object"}}],
            )  # fmt: skip
        assert "shell.exec" in tool.value.body["error"]["message"]
        for _ in range(2):
            await free.messages.create(model="gpt-4o-mini", max_tokens=10, messages=hello)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await free.messages.create(model="gpt-4o-mini", max_tokens=10, messages=hello)
        assert limited.value.body["error"]["type"] == "rate_limit_error"
        assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(limited.value.response.headers["retry-after"]) >= 1

        tiny = _anthropic(gw, await gw.tenant_key("t", plan="tiny"))
        with pytest.raises(anthropic.RateLimitError) as broke:
            await tiny.messages.create(model="gpt-4o-mini", max_tokens=10, messages=hello)
        assert "Budget exceeded" in broke.value.body["error"]["message"]
        with pytest.raises(anthropic.BadRequestError) as bad:
            await free.messages.create(model="gpt-4o-mini", max_tokens=0, messages=hello)
        assert bad.value.body["type"] == "error"
        assert len(await gw.ledger("f")) == 2 and await gw.ledger("t") == []
