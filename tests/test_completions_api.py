"""Issue [10], acceptance 5 (second half): ``POST /v1/completions``, the legacy text completions,
through the official ``openai`` SDK, streamed and not, served by the built-in mock and by an
Anthropic-format deployment (a loopback fake speaking the real Messages wire format).

It goes through the chat request path: one ledger entry per request (endpoint
``completions``), the cost header equal to the list price of the reported usage, a budget
refusal reaching the SDK as ``RateLimitError``, the plan's model access and request limits.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from fakes.anthropic_upstream import AnthropicUpstream, text_block, usage
from farebox.core.money import parse_usd
from farebox.gateway.auth import Principal
from farebox.gateway.pipeline import StreamReply
from farebox.providers.translate_completions import completion_request_to_chat
from tests.claude_deployment import claude_gateway

# gpt-4o-mini: USD 0.15 / 0.075 (cached) / 0.60 per 1M tokens; claude-sonnet-4-5: 3 / 15
MINI = {"in": 150_000, "cached": 75_000, "out": 600_000}
SONNET = {"in": 3_000_000, "out": 15_000_000}
PLANS: dict[str, Any] = {
    "pro": {"models": ["*"]},
    "free": {
        "models": ["gpt-4o-mini"],
        "rate_limits": [{"scope": "key", "requests_per_minute": 1}],
    },
    "tiny": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.000001"}]},
}


def _openai(gw: Any, key: str) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gw.app))
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://gateway/v1", http_client=http, max_retries=0
    )


def _mini_cost(u: Any) -> int:
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    cached = cached or 0
    return (
        (u.prompt_tokens - cached) * MINI["in"]
        + cached * MINI["cached"]
        + u.completion_tokens * MINI["out"]
    )


async def test_completions_create_not_streamed(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        raw = await client.completions.with_raw_response.create(
            model="gpt-4o-mini", prompt="Say hello", max_tokens=20, user="u-1"
        )
        completion = raw.parse()
        assert completion.object == "text_completion"
        assert completion.id.startswith("cmpl-")
        (choice,) = completion.choices
        assert choice.text and choice.index == 0
        assert choice.finish_reason in ("stop", "length")
        assert completion.usage is not None and completion.usage.completion_tokens > 0
        (entry,) = await gw.ledger("acme")
        assert entry.endpoint == "completions" and entry.status == "ok" and not entry.stream
        assert entry.user == "u-1"
        assert entry.request_id == raw.headers["x-farebox-request-id"]
        assert entry.input_tokens == completion.usage.prompt_tokens
        assert entry.output_tokens == completion.usage.completion_tokens
        cost = parse_usd(raw.headers["x-farebox-cost-usd"])
        assert cost == entry.cost == _mini_cost(completion.usage) > 0
        assert raw.headers["x-farebox-model"] == "gpt-4o-mini"
        assert raw.headers["x-farebox-budget-remaining-usd"] == "unlimited"


async def test_completions_create_streamed(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        stream = await client.completions.create(
            model="gpt-4o-mini",
            prompt=["Stream hello"],
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks and {c.object for c in chunks} == {"text_completion"}
        assert len({c.id for c in chunks}) == 1
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert text and reasons[-1] in ("stop", "length")
        final = chunks[-1]
        assert final.choices == [] and final.usage is not None
        (entry,) = await gw.ledger("acme")
        assert entry.endpoint == "completions" and entry.stream and entry.status == "ok"
        assert entry.output_tokens == final.usage.completion_tokens
        assert entry.cost == _mini_cost(final.usage) > 0
        extra = final.usage.model_extra or {}
        assert parse_usd(extra["farebox_cost_usd"]) == entry.cost

        plain = await client.completions.create(
            model="gpt-4o-mini", prompt="no usage asked", stream=True
        )
        rest = [chunk async for chunk in plain]
        assert rest and all(c.usage is None for c in rest)
        assert len(await gw.ledger("acme")) == 2


async def test_completions_on_an_anthropic_deployment(
    make_gateway: Any, claude: AnthropicUpstream
) -> None:
    async with claude_gateway(make_gateway, claude, PLANS) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        claude.reply_message([text_block("Bonjour")], usage=usage(11, 3))
        raw = await client.completions.with_raw_response.create(
            model="smart", prompt="Say hello in French", max_tokens=50, stop=["\n"]
        )
        completion = raw.parse()
        assert completion.choices[0].text == "Bonjour"
        assert completion.choices[0].finish_reason == "stop"
        sent = claude.last.json
        assert sent["messages"] == [{"role": "user", "content": "Say hello in French"}]
        assert sent["max_tokens"] == 50 and sent["stop_sequences"] == ["\n"]
        cost = parse_usd(raw.headers["x-farebox-cost-usd"])
        assert cost == 11 * SONNET["in"] + 3 * SONNET["out"]

        claude.reply_stream(
            ["Bon", "jour"], start_usage=usage(11, 1), delta_usages=({"output_tokens": 4},)
        )
        stream = await client.completions.create(
            model="smart", prompt="Again", stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].text for c in chunks if c.choices) == "Bonjour"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
        entries = await gw.ledger("acme")
        assert len(entries) == 2 and {e.endpoint for e in entries} == {"completions"}
        streamed = next(e for e in entries if e.stream)
        assert streamed.cost == 11 * SONNET["in"] + 4 * SONNET["out"]


async def test_completions_obey_budgets_plans_and_limits(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        tiny = _openai(gw, await gw.tenant_key("t", plan="tiny"))
        with pytest.raises(openai.RateLimitError) as broke:
            await tiny.completions.create(model="gpt-4o-mini", prompt="hi")
        assert broke.value.code == "budget_exceeded"
        assert isinstance(broke.value.body, dict) and "limit_usd" in broke.value.body
        with pytest.raises(openai.RateLimitError):
            await tiny.completions.create(model="gpt-4o-mini", prompt="hi", stream=True)
        assert await gw.ledger("t") == []

        free = _openai(gw, await gw.tenant_key("f", plan="free"))
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await free.completions.create(model="gpt-4o", prompt="hi")
        assert denied.value.code == "model_not_allowed"
        await free.completions.create(model="gpt-4o-mini", prompt="hi")
        with pytest.raises(openai.RateLimitError) as limited:
            await free.completions.create(model="gpt-4o-mini", prompt="hi")
        assert limited.value.code == "rate_limit_exceeded"
        assert len(await gw.ledger("f")) == 1


BAD = [
    ({"prompt": "hi"}, "model"),
    ({"model": "gpt-4o-mini"}, "prompt"),
    ({"model": "gpt-4o-mini", "prompt": ["a", "b"]}, "prompt"),
    ({"model": "gpt-4o-mini", "prompt": []}, "prompt"),
    ({"model": "gpt-4o-mini", "prompt": [1, 2, 3]}, "prompt"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "n": 2}, "n"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "best_of": 3}, "best_of"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "echo": True}, "echo"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "suffix": "end"}, "suffix"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "logprobs": 2}, "logprobs"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "max_tokens": 10**9}, "max_tokens"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "temperature": "hot"}, "temperature"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "stream_options": {}}, "stream_options"),
    ({"model": "gpt-4o-mini", "prompt": "hi", "stop": ["a"] * 5}, "stop"),
]


@pytest.mark.parametrize(("body", "param"), BAD)
async def test_completions_bad_input_is_a_clear_400(
    make_gateway: Any, body: dict[str, Any], param: str
) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        key = await gw.tenant_key("acme", plan="pro")
        r = await gw.client.post(
            "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"].startswith(param) and error["message"]
        assert await gw.ledger("acme") == []


async def test_completions_stream_cut_by_the_client_is_metered(make_gateway: Any) -> None:
    config = {
        "providers": {"sim": {"kind": "mock", "output_tokens": {"distribution": "fixed",
                                                                "mean": 50}}},
        "plans": PLANS,
    }  # fmt: skip
    async with make_gateway(config) as gw:
        await gw.tenant_key("t1", plan="pro")
        services = gw.app.state.services
        tenant = await gw.store.get_tenant("t1")
        [key] = await gw.store.list_keys("t1")
        body = completion_request_to_chat(
            {"model": "gpt-4o-mini", "prompt": "Tell a long story", "max_tokens": 60,
             "stream": True}
        )  # fmt: skip
        who = Principal(tenant=tenant, key=key)
        reply = await services.gateway.chat(who, body, "req_gone", flavor="completions")
        assert isinstance(reply, StreamReply)
        received = [await anext(reply.chunks) for _ in range(4)]
        assert any(b'"object":"text_completion"' in chunk for chunk in received)
        await reply.chunks.aclose()  # what the SSE response does when the client goes away
        await services.ledger.flush()
        [entry] = await gw.ledger("t1")
        assert entry.request_id == "req_gone" and entry.endpoint == "completions"
        assert entry.status == "client_disconnected" and entry.usage_source == "estimated"
        assert 1 <= entry.output_tokens < 50


async def test_completions_upstream_cut_mid_stream(
    make_gateway: Any, claude: AnthropicUpstream
) -> None:
    config = {
        "providers": {"claude": {"kind": "anthropic", "base_url": claude.base_url}},
        "models": {"smart": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
        "plans": PLANS,
    }
    async with make_gateway(config) as gw:
        key = await gw.tenant_key("acme", plan="pro")
        claude.reply_stream(["Hel", "lo", " there"], disconnect_after=5)
        r = await gw.client.post(
            "/v1/completions",
            json={"model": "smart", "prompt": "hi", "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200
        frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert "[DONE]" not in frames and '"error"' in frames[-1]
        assert '"text_completion"' in frames[0]
        [entry] = await gw.ledger("acme")
        assert entry.status == "upstream_interrupted" and entry.endpoint == "completions"
