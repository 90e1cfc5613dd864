"""Issue [12], streams: a streamed miss is stored once it completed normally (never when cut
short or failed), with its tool calls; a hit replays them in the caller's format. Answers a
budget made different (a downgrade to a cheaper model, a clamped ``max_tokens``) are not
stored under the key of the request as asked."""

from __future__ import annotations

import json
from typing import Any

from fakes.openai_upstream import OpenAIUpstream, usage
from farebox.core.cache import HIT_EXACT, MISS
from tests.cache_gateway import ask, post, sse_data, streamed_text

TOOL = {"id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": '{"month": "march"}'}}  # fmt: skip
PLANS = {"cached": {"models": ["*"], "cache": {"mode": "exact"}}}


def gateway_config(up: OpenAIUpstream, plans: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "providers": {"oai": {"kind": "openai", "base_url": up.base_url, "api_key": "env:K"}},
        "models": {"big": [{"provider": "oai", "model": "gpt-4o"}],
                   "small": [{"provider": "oai", "model": "gpt-4o-mini"}]},
        "plans": plans or PLANS,
    }  # fmt: skip


def chat_paths(up: OpenAIUpstream) -> int:
    return sum(r.path == "/v1/chat/completions" for r in up.requests)


async def test_a_streamed_tool_call_is_stored_and_replayed(make_gateway: Any) -> None:
    async with OpenAIUpstream() as up, make_gateway(gateway_config(up), env={"K": "k"}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        up.reply_stream(("Let me ", "look."), usage=usage(20, 9), tool_calls=[TOOL])
        body = ask(model="big", stream=True, stream_options={"include_usage": True})
        first = await post(gw, key, body)
        assert first.headers["x-farebox-cache"] == MISS
        whole = await post(gw, key, ask(model="big"))
        assert whole.headers["x-farebox-cache"] == HIT_EXACT
        message = whole.json()["choices"][0]
        assert message["finish_reason"] == "tool_calls"
        assert message["message"]["content"] == "Let me look."
        assert message["message"]["tool_calls"] == [TOOL]
        assert whole.json()["usage"]["completion_tokens"] == 9
        replayed = await post(gw, key, body)
        assert streamed_text(replayed.text) == "Let me look."
        calls = [c["choices"][0]["delta"].get("tool_calls") for c in sse_data(replayed.text)
                 if isinstance(c, dict) and c["choices"]]  # fmt: skip
        (call,) = [c for c in calls if c]
        assert call[0]["function"] == TOOL["function"] and call[0]["id"] == "call_1"
        anthropic = {"model": "big", "max_tokens": 50, "stream": True,
                     "messages": ask()["messages"]}  # fmt: skip
        up.reply_stream(("Let me ", "look."), usage=usage(20, 9), tool_calls=[TOOL])
        events = await post(gw, key, anthropic, "/v1/messages")
        assert events.headers["x-farebox-cache"] == MISS  # another format: its own entry
        anthropic["stream"] = False
        whole = await post(gw, key, anthropic, "/v1/messages")
        assert whole.headers["x-farebox-cache"] == HIT_EXACT
        assert [b["type"] for b in whole.json()["content"]] == ["text", "tool_use"]
        anthropic["stream"] = True
        again = await post(gw, key, anthropic, "/v1/messages")
        assert again.headers["x-farebox-cache"] == HIT_EXACT
        assert chat_paths(up) == 2
        starts = [json.loads(line[6:]) for line in again.text.splitlines()
                  if line.startswith("data: ") and "content_block_start" in line]  # fmt: skip
        assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]


async def test_a_stream_cut_short_or_failed_is_not_stored(make_gateway: Any) -> None:
    async with OpenAIUpstream() as up, make_gateway(gateway_config(up), env={"K": "k"}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        body = ask(model="big", stream=True)
        up.reply_stream(("a", "b", "c"), usage=usage(5, 3), disconnect_after=2)
        cut = await post(gw, key, body)
        assert cut.status_code == 200 and "error" in cut.text
        error = {"message": "overloaded", "type": "server_error"}
        up.reply_stream(("a",), error=error)
        failed = await post(gw, key, body)
        assert failed.status_code == 200 and "error" in failed.text
        up.reply_stream(("a", "b"), usage=usage(5, 2))
        whole = await post(gw, key, body)
        assert whole.headers["x-farebox-cache"] == MISS  # neither before was stored
        assert streamed_text(whole.text) == "ab"
        assert (await post(gw, key, body)).headers["x-farebox-cache"] == HIT_EXACT
        statuses = [e.status for e in await gw.ledger("acme")]
        assert statuses == ["upstream_interrupted", "upstream_interrupted", "ok", "cache_hit"]


async def test_answers_a_budget_changed_are_not_stored(make_gateway: Any) -> None:
    plans = {"tight": {"models": ["*"], "cache": {"mode": "exact"}, "downgrade": {"big": "small"},
                       "budgets": [{"period": "day", "limit_usd": "0.01"}]}}  # fmt: skip
    async with (
        OpenAIUpstream() as up,
        make_gateway(gateway_config(up, plans), env={"K": "k"}) as gw,
    ):
        key = await gw.tenant_key("acme", plan="tight")
        # USD 0.0096: over 90% of the budget spent, so "big" is downgraded to "small" now
        up.reply_chat("spent", usage=usage(400, 860))
        assert (await post(gw, key, ask("first", model="big"))).status_code == 200
        for _ in range(2):
            up.reply_chat("downgraded", usage=usage(10, 5))
            r = await post(gw, key, ask("second", model="big"))
            assert r.headers["x-farebox-model"] == "gpt-4o-mini"
            assert r.headers["x-farebox-cache"] == MISS  # the first was not stored
        # a clamped answer cut at its lowered max_tokens is not the answer asked for
        up.reply_chat("cut", usage=usage(10, 5), finish_reason="length")
        r = await post(gw, key, ask("third", model="small", max_tokens=16_000))
        assert r.status_code == 200, r.text
        up.reply_chat("cut again", usage=usage(10, 5), finish_reason="length")
        r = await post(gw, key, ask("third", model="small", max_tokens=16_000))
        assert r.headers["x-farebox-cache"] == MISS
        assert chat_paths(up) == 5
