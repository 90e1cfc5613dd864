"""Issue [10], acceptance 5 (first half): token counting through the official SDKs.

- ``anthropic`` ``messages.count_tokens`` on ``POST /v1/messages/count_tokens``: forwarded to
  the provider's own counting endpoint when the model's first deployment is Anthropic (a
  loopback fake speaking the real wire format), else counted by the reservation estimator;
- ``openai`` ``responses.input_tokens.count`` on ``POST /v1/responses/input_tokens``, counted
  by the estimator.

Both are authenticated and held to the plan's model access, and leave no ledger entry, no
budget hold and no spend. How counts take from the rate limits is in
``test_counting_limits``; counting a stored conversation in ``test_counting_history``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from fakes import Reply
from fakes.anthropic_upstream import AnthropicUpstream, error_body
from farebox.core.counting import estimate_chat_input, estimate_response_input
from farebox.core.money import parse_usd
from tests.claude_deployment import claude_gateway
from tests.conftest import Gateway
from tests.test_messages_api import _anthropic, _openai

PLANS: dict[str, Any] = {
    "pro": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "5"}]},
    "free": {
        "models": ["gpt-4o-mini", "smart"],
        "rate_limits": [{"scope": "key", "requests_per_minute": 2}],
    },
}
HELLO = [{"role": "user", "content": "Hello, how many tokens is this?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"name": "get_weather", "description": "Weather in a city", "input_schema": CITY}]


# two mock models beside the Anthropic deployment (``smart``)
MOCKS: dict[str, Any] = {
    "providers": {"sim": {"kind": "mock"}},
    "models": {"gpt-4o-mini": [{"provider": "sim", "model": "gpt-4o-mini"}],
               "gpt-4o": [{"provider": "sim", "model": "gpt-4o"}]},
}  # fmt: skip


def counting_gateway(make_gateway: Any, claude: AnthropicUpstream, plans: dict[str, Any]) -> Any:
    """``async with counting_gateway(...) as gw:`` the Anthropic deployment and the mocks."""
    return claude_gateway(make_gateway, claude, plans, **MOCKS)


@pytest.fixture
async def gw(make_gateway: Any, claude: AnthropicUpstream) -> AsyncIterator[Gateway]:
    async with counting_gateway(make_gateway, claude, PLANS) as g:
        yield g


@pytest.fixture
async def acme(gw: Gateway) -> anthropic.AsyncAnthropic:
    """An ``anthropic`` client of tenant ``acme`` (plan ``pro``: a budget, no rate limit)."""
    return _anthropic(gw, await gw.tenant_key("acme", plan="pro"))


async def _nothing_spent(gw: Gateway, key: str, tenant: str = "acme") -> None:
    assert await gw.ledger(tenant) == []
    me = (await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})).json()
    assert me["budgets"]
    for budget in me["budgets"]:
        assert parse_usd(budget["used_usd"]) == parse_usd(budget["reserved_usd"]) == 0, budget


async def test_count_tokens_forwarded_to_anthropic(
    gw: Gateway, acme: anthropic.AsyncAnthropic, claude: AnthropicUpstream
) -> None:
    raw = await acme.messages.with_raw_response.count_tokens(
        model="smart", system="Be brief.", messages=HELLO, tools=TOOLS
    )
    counted = await raw.parse()
    sent = claude.last
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.json["model"] == "claude-sonnet-4-5"
    assert sent.json["messages"] == HELLO and sent.json["system"] == "Be brief."
    assert sent.json["tools"] == TOOLS
    # the fake's own count (see fakes.anthropic_upstream.count_reply), not an estimate
    assert counted.input_tokens > 0
    claude.reply_count(4242)
    again = await acme.messages.count_tokens(model="smart", messages=HELLO)
    assert again.input_tokens == 4242
    assert raw.headers["x-farebox-count-source"] == "provider"
    assert raw.headers["x-farebox-model"] == "claude-sonnet-4-5"
    assert raw.headers["x-farebox-request-id"].startswith("req_")
    assert claude.calls == 2
    await _nothing_spent(gw, acme.api_key)


async def test_count_tokens_estimated_for_other_deployments(
    gw: Gateway, acme: anthropic.AsyncAnthropic, claude: AnthropicUpstream
) -> None:
    raw = await acme.messages.with_raw_response.count_tokens(
        model="gpt-4o-mini", system="Be brief.", messages=HELLO, tools=TOOLS
    )
    counted = await raw.parse()
    chat_tools = [{"type": "function", "function": {"name": "get_weather",
                   "description": "Weather in a city",
                   "parameters": TOOLS[0]["input_schema"]}}]  # fmt: skip
    system = {"role": "system", "content": "Be brief."}
    assert counted.input_tokens == estimate_chat_input([system, *HELLO], chat_tools)
    assert raw.headers["x-farebox-count-source"] == "estimate"
    assert claude.calls == 0
    await _nothing_spent(gw, acme.api_key)


async def test_count_tokens_falls_back_to_the_estimate_when_upstream_fails(
    gw: Gateway, acme: anthropic.AsyncAnthropic, claude: AnthropicUpstream
) -> None:
    claude.push(Reply(status=529, body=error_body("overloaded_error", "Overloaded")))
    raw = await acme.messages.with_raw_response.count_tokens(model="smart", messages=HELLO)
    assert raw.headers["x-farebox-count-source"] == "estimate"
    assert (await raw.parse()).input_tokens == estimate_chat_input(HELLO)
    claude.push(Reply(status=400, body=error_body("invalid_request_error", "bad thing")))
    with pytest.raises(anthropic.BadRequestError) as bad:
        await acme.messages.count_tokens(model="smart", messages=HELLO)
    assert bad.value.body["type"] == "error"
    await _nothing_spent(gw, acme.api_key)


async def test_counting_obeys_tenancy_and_plan(gw: Gateway) -> None:
    client = _anthropic(gw, await gw.tenant_key("free", plan="free"))
    with pytest.raises(anthropic.AuthenticationError):
        await _anthropic(gw, "fbx_nope").messages.count_tokens(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        await client.messages.count_tokens(model="gpt-4o", messages=HELLO)
    assert denied.value.body["error"]["type"] == "permission_error"
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(model="no-such-model", messages=HELLO)
    with pytest.raises(openai.PermissionDeniedError):
        await _openai(gw, client.api_key).responses.input_tokens.count(model="gpt-4o", input="hi")
    assert await gw.ledger("free") == []


async def test_responses_input_tokens_counted_locally(gw: Gateway) -> None:
    key = await gw.tenant_key("acme", plan="pro")
    client = _openai(gw, key)
    items: list[Any] = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather",
         "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny, 21C"},
    ]  # fmt: skip
    tools: list[Any] = [{"type": "function", "name": "get_weather",
                         "parameters": {"type": "object"}}]  # fmt: skip
    counted = await client.responses.input_tokens.count(
        model="gpt-4o-mini", input=items, instructions="Be brief.", tools=tools
    )
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == estimate_response_input(items, "Be brief.", tools)
    plain = await client.responses.input_tokens.count(model="gpt-4o-mini", input="hi there")
    assert plain.input_tokens == estimate_response_input("hi there") > 0
    modelless = await client.responses.input_tokens.count(input="hi there")
    assert modelless.input_tokens == plain.input_tokens
    await _nothing_spent(gw, key)


BAD_COUNTS = [
    ("/v1/messages/count_tokens", {"messages": HELLO}, "model"),
    ("/v1/messages/count_tokens", {"model": "gpt-4o-mini"}, "messages"),
    ("/v1/messages/count_tokens", {"model": "gpt-4o-mini", "messages": []}, "messages"),
    ("/v1/messages/count_tokens", {"model": "gpt-4o-mini", "messages": [{"role": "bot"}]},
     "messages[0]"),
    ("/v1/messages/count_tokens", {"model": "gpt-4o-mini", "messages": HELLO, "tools": [{}]},
     "tools[0]"),
    ("/v1/responses/input_tokens", {"model": "gpt-4o-mini", "input": [{"type": "web_search"}]},
     "input[0]"),
    ("/v1/responses/input_tokens", {"model": "gpt-4o-mini", "input": 42}, "input"),
    ("/v1/responses/input_tokens", {"model": "gpt-4o-mini", "previous_response_id": 42},
     "previous_response_id"),
    ("/v1/responses/input_tokens", {"model": "gpt-4o-mini", "conversation": "conv_1"},
     "conversation"),
    ("/v1/responses/input_tokens", {"model": "", "input": "hi"}, "model"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "param"), BAD_COUNTS)
async def test_counting_bad_input_is_a_clear_400(
    gw: Gateway, path: str, body: dict[str, Any], param: str
) -> None:
    key = await gw.tenant_key("acme", plan="pro")
    r = await gw.client.post(path, json=body, headers={"x-api-key": key})
    assert r.status_code == 400, r.text
    data = r.json()
    error = data["error"]
    if path.startswith("/v1/messages"):
        assert data["type"] == "error" and error["type"] == "invalid_request_error"
    else:
        assert error["param"].startswith(param), error
    assert param.split("[")[0] in error["message"]


@pytest.mark.parametrize(
    "path", ["/v1/messages/count_tokens", "/v1/responses/input_tokens", "/v1/completions"]
)
async def test_a_10_mb_input_is_a_clear_413(gw: Gateway, path: str) -> None:
    key = await gw.tenant_key("acme", plan="pro")
    huge = "x" * (10 * 1024 * 1024)
    bodies = {
        "/v1/messages/count_tokens": {"model": "gpt-4o-mini",
                                      "messages": [{"role": "user", "content": huge}]},
        "/v1/responses/input_tokens": {"model": "gpt-4o-mini", "input": huge},
        "/v1/completions": {"model": "gpt-4o-mini", "prompt": huge},
    }  # fmt: skip
    r = await gw.client.post(path, json=bodies[path], headers={"x-api-key": key})
    assert r.status_code == 413, r.text[:300]
    assert await gw.ledger("acme") == []
