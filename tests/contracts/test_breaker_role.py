"""The ``BreakerStore`` contract, on every backend that shares breakers (memory, SQLite,
single-process SQLite, PostgreSQL plus Redis): what one process opens, every process reads;
exactly one caller wins each half-open probe."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.contracts.backends import ALL_IN_ONE
from tests.contracts.builders import T0

BACKENDS = ALL_IN_ONE


async def test_open_breakers_are_shared_and_closed_ones_vanish(store: Any) -> None:
    assert await store.breakers() == {}
    await store.set_breaker("openai/gpt-4o", T0 + 30)
    await store.set_breaker("claude/claude-sonnet-4-5", T0 + 60)
    assert await store.breakers() == {
        "openai/gpt-4o": T0 + 30,
        "claude/claude-sonnet-4-5": T0 + 60,
    }
    await store.set_breaker("openai/gpt-4o", 0.0)
    assert await store.breakers() == {"claude/claude-sonnet-4-5": T0 + 60}


async def test_exactly_one_caller_wins_a_probe(store: Any) -> None:
    await store.set_breaker("openai/gpt-4o", T0)
    wins = await asyncio.gather(
        *(store.claim_probe("openai/gpt-4o", T0 + 1, T0 + 31) for _ in range(20))
    )
    assert sum(wins) == 1
    # the claim lasts until its end; then the next probe may be claimed, once
    assert not await store.claim_probe("openai/gpt-4o", T0 + 30, T0 + 60)
    later = await asyncio.gather(
        *(store.claim_probe("openai/gpt-4o", T0 + 31, T0 + 61) for _ in range(5))
    )
    assert sum(later) == 1
