"""Issue 15: the counting endpoints and the guardrails. ``/v1/messages/count_tokens`` is
forwarded to the provider's own counting endpoint when the model's first deployment is
Anthropic: then the plan's secrets and PII checks screen it first (a block refuses it with
chat's 400; a value a redaction would replace keeps the count local, by the estimator; a flag
sends it as it is). ``/v1/responses/input_tokens`` is counted locally: nothing goes upstream,
nothing is screened. A count writes no ledger entry, screened or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from fakes.anthropic_upstream import AnthropicUpstream
from tests.conftest import Gateway
from tests.guard_world import AWS_KEY, EMAIL, INJECTION, plan
from tests.test_counting_api import counting_gateway
from tests.test_messages_api import _anthropic, _openai

PLANS: dict[str, Any] = {
    "block": plan(
        {
            "secrets": {"mode": "block"},
            "pii": {"mode": "block", "engine": "builtin"},
            "prompt_injection": {"mode": "block"},
        }
    ),  # fmt: skip
    "redact": plan({"pii": {"mode": "redact", "engine": "builtin"}}),
    "flag": plan({"pii": {"mode": "flag", "engine": "builtin"}}),
}


def said(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
async def gw(make_gateway: Any, claude: AnthropicUpstream) -> AsyncIterator[Gateway]:
    async with counting_gateway(make_gateway, claude, PLANS) as g:
        yield g


async def test_a_blocked_value_is_refused_before_the_provider_counts(
    gw: Gateway, claude: AnthropicUpstream
) -> None:
    client = _anthropic(gw, await gw.tenant_key("acme", plan="block"))
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.count_tokens(model="smart", messages=said(f"key {AWS_KEY}"))
    assert refused.value.body["error"]["code"] == "secret_detected"  # type: ignore[index]
    tools = [{"name": "t", "description": f"mail {EMAIL}", "input_schema": {"type": "object"}}]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.count_tokens(model="smart", messages=said(f"I am {EMAIL}"))
    # PII reads the user and tool parts (not ``system``, where tool descriptions are); an
    # injection does nothing to a count: not checked
    counted = await client.messages.count_tokens(model="smart", tools=tools,  # type: ignore[arg-type]
                                                 messages=said(INJECTION))  # fmt: skip
    assert counted.input_tokens > 0
    assert claude.calls == 1 and AWS_KEY not in repr(claude.last.json)
    assert await gw.ledger("acme") == []


async def test_a_value_to_redact_is_counted_locally(gw: Gateway, claude: AnthropicUpstream) -> None:
    client = _anthropic(gw, await gw.tenant_key("acme", plan="redact"))
    raw = await client.messages.with_raw_response.count_tokens(
        model="smart", messages=said(f"Mail {EMAIL} please")
    )
    assert raw.headers["x-farebox-count-source"] == "estimate"
    assert (await raw.parse()).input_tokens > 0
    assert claude.calls == 0
    clean = await client.messages.with_raw_response.count_tokens(
        model="smart", messages=said("nothing to hide")
    )
    assert clean.headers["x-farebox-count-source"] == "provider" and claude.calls == 1
    assert await gw.ledger("acme") == []


async def test_a_flag_sends_the_count_as_it_is(gw: Gateway, claude: AnthropicUpstream) -> None:
    client = _anthropic(gw, await gw.tenant_key("acme", plan="flag"))
    raw = await client.messages.with_raw_response.count_tokens(
        model="smart", messages=said(f"Mail {EMAIL}")
    )
    assert raw.headers["x-farebox-count-source"] == "provider"
    assert EMAIL in repr(claude.last.json)
    assert await gw.ledger("acme") == []


async def test_responses_input_tokens_is_local_and_not_screened(
    gw: Gateway, claude: AnthropicUpstream
) -> None:
    client = _openai(gw, await gw.tenant_key("acme", plan="block"))
    counted = await client.responses.input_tokens.count(model="smart", input=f"key {AWS_KEY}")
    assert counted.input_tokens > 0 and claude.calls == 0
    with pytest.raises(openai.BadRequestError):  # the request itself would be refused
        await client.responses.create(model="smart", input=f"key {AWS_KEY}")
    assert claude.calls == 0
