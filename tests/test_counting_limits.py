"""Issue [10]: a token count is "rate limited as a request of the plan, never billed and never
reserved against a budget; a ledger-free path".

A count takes one request of the plan's requests-per-minute limits, and a slot of its
concurrency limits while it runs, from the same counters as chat requests, so N counts leave
no room for a chat request and N chat requests none for a count; its slot is given back when
it ends however it ends (answered, failed upstream, or abandoned by a client that went away),
and it writes no ledger entry. Tokens-per-minute limits are not charged (a count has no model
read anything).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from fakes import Recorded, Reply
from fakes.anthropic_upstream import AnthropicUpstream, error_body
from tests.conftest import Gateway
from tests.test_counting_api import HELLO, counting_gateway
from tests.test_messages_api import _anthropic, _openai

PLANS: dict[str, Any] = {
    "free": {
        "models": ["*"],
        "rate_limits": [{"scope": "key", "requests_per_minute": 3}],
        "budgets": [{"period": "day", "limit_usd": "5"}],
    },
    "tpm": {"models": ["*"], "rate_limits": [{"scope": "key", "tokens_per_minute": 20}]},
    "one": {"models": ["*"], "rate_limits": [{"scope": "key", "concurrent": 1}]},
}


class HeldCounts(AnthropicUpstream):
    """The Anthropic fake, whose counts can be held upstream (``gate``) until released;
    ``arrived`` is set when one reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()
        self.gate: asyncio.Event | None = None

    def default_reply(self, request: Recorded) -> Reply:
        self.arrived.set()
        reply = super().default_reply(request)
        reply.gate = self.gate
        return reply


@pytest.fixture
async def held() -> AsyncIterator[HeldCounts]:
    async with HeldCounts() as upstream:
        yield upstream


@pytest.fixture
async def gw(make_gateway: Any, held: HeldCounts) -> AsyncIterator[Gateway]:
    async with counting_gateway(make_gateway, held, PLANS) as g:
        yield g


async def test_counts_take_requests_from_the_window_chat_requests_use(gw: Gateway) -> None:
    client = _anthropic(gw, await gw.tenant_key("counter", plan="free"))
    remaining = []
    for model in ("smart", "gpt-4o-mini", "smart"):  # forwarded, estimated, forwarded
        raw = await client.messages.with_raw_response.count_tokens(model=model, messages=HELLO)
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model="gpt-4o-mini", max_tokens=8, messages=HELLO)
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError) as also:  # and the next count
        await _openai(gw, client.api_key).responses.input_tokens.count(input="hi")
    assert also.value.code == "rate_limit_exceeded"
    assert int(also.value.response.headers["retry-after"]) >= 1
    assert await gw.ledger("counter") == []  # nothing was billed, counted or not


async def test_chat_requests_leave_no_room_for_a_count(gw: Gateway) -> None:
    client = _anthropic(gw, await gw.tenant_key("chatter", plan="free"))
    for _ in range(3):
        await client.messages.create(model="gpt-4o-mini", max_tokens=1, messages=HELLO)
    for model in ("smart", "gpt-4o-mini"):
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.count_tokens(model=model, messages=HELLO)
        headers = limited.value.response.headers
        assert headers["x-ratelimit-remaining-requests"] == "0"
    assert len(await gw.ledger("chatter")) == 3  # the three messages, no count


async def test_tokens_per_minute_are_not_charged(gw: Gateway) -> None:
    """The plan allows 20 tokens a minute; counts of far more still pass."""
    client = _anthropic(gw, await gw.tenant_key("long", plan="tpm"))
    long = [{"role": "user", "content": "word " * 400}]
    for _ in range(3):
        counted = await client.messages.count_tokens(model="gpt-4o-mini", messages=long)
        assert counted.input_tokens > 20


async def test_a_count_holds_its_slot_while_it_runs(gw: Gateway, held: HeldCounts) -> None:
    key = await gw.tenant_key("busy", plan="one")
    client, oai = _anthropic(gw, key), _openai(gw, key)
    held.gate = asyncio.Event()
    running = asyncio.create_task(client.messages.count_tokens(model="smart", messages=HELLO))
    await held.arrived.wait()
    with pytest.raises(openai.RateLimitError) as busy:
        await oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert busy.value.body["limit"]["unit"] == "concurrent"  # type: ignore[index]
    held.gate.set()
    assert (await running).input_tokens > 0
    held.gate = None
    assert (await oai.responses.input_tokens.count(input="hi")).input_tokens > 0
    assert await gw.ledger("busy") == []


async def test_a_client_that_goes_away_gives_its_slot_back(gw: Gateway, held: HeldCounts) -> None:
    key = await gw.tenant_key("gone", plan="one")
    client = _anthropic(gw, key)
    gate = held.gate = asyncio.Event()
    running = asyncio.create_task(client.messages.count_tokens(model="smart", messages=HELLO))
    await held.arrived.wait()
    running.cancel()  # the client hangs up while the count waits upstream
    with contextlib.suppress(asyncio.CancelledError):
        await running
    held.gate = None
    counted = await client.messages.count_tokens(model="smart", messages=HELLO)
    assert counted.input_tokens > 0
    gate.set()
    assert await gw.ledger("gone") == []


async def test_a_failed_upstream_count_gives_its_slot_back(gw: Gateway, held: HeldCounts) -> None:
    client = _anthropic(gw, await gw.tenant_key("failing", plan="one"))
    for status, kind in ((400, "invalid_request_error"), (401, "authentication_error")):
        held.push(Reply(status=status, body=error_body(kind, "no")))
        with pytest.raises(anthropic.APIStatusError):
            await client.messages.count_tokens(model="smart", messages=HELLO)
    held.push(Reply(status=529, body=error_body("overloaded_error", "Overloaded")))
    raw = await client.messages.with_raw_response.count_tokens(model="smart", messages=HELLO)
    assert raw.headers["x-farebox-count-source"] == "estimate"
    assert (await client.messages.count_tokens(model="smart", messages=HELLO)).input_tokens > 0
    assert await gw.ledger("failing") == []
