"""Issue [10]: ``POST /v1/responses/input_tokens`` with a ``previous_response_id`` counts the
stored conversation it continues, put before the new input exactly as ``POST /v1/responses``
puts it; the id is read as there: the tenant's own stored response, else 404 (an unknown id,
another tenant's, one answered with ``store: false``), all alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from farebox.core.counting import estimate_response_input
from farebox.providers.translate_responses_history import input_items, output_as_input
from tests.conftest import Gateway
from tests.test_messages_api import _openai

PLANS: dict[str, Any] = {"pro": {"models": ["*"]}}


def turn(text: str, answer: Any) -> list[dict[str, Any]]:
    """One turn of the conversation as input items: what was asked, what was answered."""
    return [*input_items(text), *output_as_input([o.model_dump() for o in answer.output])]


async def test_a_chain_is_counted_with_its_history(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        first = await client.responses.create(model="gpt-4o-mini", input="I am Ann.")
        second = await client.responses.create(
            model="gpt-4o-mini", input="Weather?", previous_response_id=first.id
        )
        history = [*turn("I am Ann.", first), *turn("Weather?", second)]
        counted = await client.responses.input_tokens.count(
            model="gpt-4o-mini", input="Name?", previous_response_id=second.id
        )
        assert counted.input_tokens == estimate_response_input([*history, *input_items("Name?")])
        alone = await client.responses.input_tokens.count(input="Name?")
        assert counted.input_tokens > alone.input_tokens
        history_only = await client.responses.input_tokens.count(previous_response_id=second.id)
        assert history_only.input_tokens == estimate_response_input(history)
        shorter = await client.responses.input_tokens.count(
            input="Name?", previous_response_id=first.id
        )
        assert alone.input_tokens < shorter.input_tokens < counted.input_tokens
        assert len(await gw.ledger("acme")) == 2  # the two answers; no count


async def _refused(client: openai.AsyncOpenAI, response_id: str) -> dict[str, Any]:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.input_tokens.count(input="hi", previous_response_id=response_id)
    body = missing.value.body
    assert isinstance(body, dict)
    return {**body, "message": body["message"].replace(response_id, "ID")}


async def test_another_tenants_or_an_unstored_id_is_404_like_an_unknown_one(
    make_gateway: Any,
) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        acme = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        other = _openai(gw, await gw.tenant_key("other", plan="pro"))
        kept = await acme.responses.create(model="gpt-4o-mini", input="Secret plan.")
        unstored = await acme.responses.create(model="gpt-4o-mini", input="hi", store=False)
        assert (await acme.responses.input_tokens.count(previous_response_id=kept.id)).input_tokens
        unknown = await _refused(acme, "resp_" + "0" * 32)
        assert unknown["param"] == "previous_response_id"
        assert await _refused(other, kept.id) == unknown
        assert await _refused(acme, unstored.id) == unknown


@pytest.fixture
async def gw_limited(make_gateway: Any) -> AsyncIterator[Gateway]:
    plans = {"one": {"models": ["*"], "rate_limits": [{"scope": "key", "requests_per_minute": 1}]}}
    async with make_gateway({"plans": plans}) as gw:
        yield gw


async def test_404_takes_no_request_from_the_window(gw_limited: Gateway) -> None:
    """The stored history is read before the count takes its request, as for a response."""
    client = _openai(gw_limited, await gw_limited.tenant_key("acme", plan="one"))
    for _ in range(2):
        await _refused(client, "resp_unknown")
    counted = await client.responses.input_tokens.with_raw_response.count(input="hi")
    assert counted.headers["x-ratelimit-remaining-requests"] == "0"
