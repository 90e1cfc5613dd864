"""RedisBudgets: the budget semantics of the SQLite and in-memory stores, on a live Redis.

Reserve, settle, release, idempotence, leases, late settlement, rolling windows and rollover
mirror ``tests/contracts/test_reservation_role.py``; a randomised run compares every answer with
``MemoryBudgets``; exactness is checked on amounts beyond 2^53; and many clients in one
process, then several processes, race for one budget.

Needs Redis at 127.0.0.1:6379: skipped when it is not running, unless
``FAREBOX_REQUIRE_SERVICES=1``, which makes that a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import RedisError

from farebox.core.budgets import BudgetSpec, Hold, HoldState, holds
from farebox.core.periods import parse_period
from farebox.core.records import LedgerEntry, Reservation
from farebox.errors import Conflict, FareboxError
from farebox.stores.memory.budgets import MemoryBudgets
from farebox.stores.redis.budgets import RECLAIMED_TTL_S, RedisBudgets
from tests.contracts.builders import entry, hold

HOST, PORT = "127.0.0.1", 6379
DAY = 86_400.0
T0 = 1_750_032_000.0  # 2025-06-16T00:00:00Z


_down: list[str] = []  # why Redis was unreachable, once found out: skip the rest at once


async def connect(**kw: Any) -> aioredis.Redis:
    """A client on the test Redis, or a skip (a failure with FAREBOX_REQUIRE_SERVICES=1)."""
    required = os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1"
    if _down and not required:
        pytest.skip(_down[0])
    client = aioredis.Redis(host=HOST, port=PORT, socket_connect_timeout=2, **kw)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        message = f"Redis at {HOST}:{PORT} is not running: {type(exc).__name__}: {exc}"
        if required:
            pytest.fail(message, pytrace=False)
        _down.append(message)
        pytest.skip(message)
    return client


async def drop(client: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{{{prefix}}}*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = await connect()
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def budgets(client: aioredis.Redis) -> AsyncIterator[RedisBudgets]:
    prefix = f"fbxtest-{uuid.uuid4().hex}"
    try:
        yield RedisBudgets(client, prefix)
    finally:
        await drop(client, prefix)


def reservation(
    rid: str, amount: int, on: Sequence[Hold], expires_at: float = T0 + 60
) -> Reservation:
    """Like the contract suite's, with metadata that must round-trip through Redis."""
    placeholder = entry(
        f"req-{rid}",
        status="unsettled",
        http_status=0,
        cost=0,
        reservation_id=rid,
        metadata={"trace": "abc", "n": 1},
        feature="search",
    )
    return Reservation(rid, amount, tuple(on), expires_at, placeholder)


def settlement(rid: str, cost: int, **kw: Any) -> LedgerEntry:
    return entry(kw.pop("request_id", f"req-{rid}"), cost=cost, reservation_id=rid, **kw)


async def state(budgets: RedisBudgets, h: Hold) -> tuple[int, int, int]:
    (s,) = await budgets.states([h])
    assert isinstance(s, HoldState) and s.hold == h
    return s.used, s.reserved, s.limit


# --- reserve ------------------------------------------------------------------------------


async def test_reserve_holds_amount_on_every_hold(budgets: RedisBudgets) -> None:
    a, b = hold("tenant:acme:day", 100), hold("key:k1:day", 50, scope="key")
    outcome = await budgets.reserve(reservation("r1", 40, [a, b]))
    assert outcome.ok is True and outcome.failed is None
    assert [(s.hold, s.used, s.reserved, s.limit) for s in outcome.states] == [
        (a, 0, 40, 100),
        (b, 0, 40, 50),
    ]
    assert await state(budgets, a) == (0, 40, 100)
    assert await state(budgets, b) == (0, 40, 50)


async def test_reserve_failure_on_second_hold_leaves_first_untouched(
    budgets: RedisBudgets,
) -> None:
    a, b = hold("tenant:acme:day", 100), hold("key:k1:day", 50, scope="key")
    assert (await budgets.reserve(reservation("r1", 40, [a, b]))).ok
    failed = await budgets.reserve(reservation("r2", 20, [a, b]))  # fits a (60), not b (60 > 50)
    assert failed.ok is False
    assert failed.failed is not None and failed.failed.hold == b
    assert (failed.failed.used, failed.failed.reserved, failed.failed.limit) == (0, 40, 50)
    assert [(s.hold.key, s.reserved) for s in failed.states] == [
        ("tenant:acme:day", 40),
        ("key:k1:day", 40),
    ]  # as found
    assert await state(budgets, a) == (0, 40, 100)
    assert await state(budgets, b) == (0, 40, 50)
    # the failed reservation is not a lease: never reclaimed, cannot be settled
    reclaimed = await budgets.expired(T0 + 10 * DAY)
    assert [e.reservation_id for e in reclaimed] == ["r1"]
    await budgets.settle([settlement("r2", 20)])
    assert await state(budgets, a) == (0, 0, 100)
    assert await state(budgets, b) == (0, 0, 50)


async def test_reserve_exact_fit_then_one_more_fails(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await budgets.reserve(reservation("r1", 60, [a]))).ok
    assert (await budgets.reserve(reservation("r2", 40, [a]))).ok
    over = await budgets.reserve(reservation("r3", 1, [a]))
    assert not over.ok and over.failed is not None and over.failed.remaining == 0
    assert await state(budgets, a) == (0, 100, 100)


async def test_reserve_over_limit_on_its_own_fails(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    outcome = await budgets.reserve(reservation("r1", 101, [a]))
    assert outcome.ok is False and outcome.failed is not None and outcome.failed.hold == a
    assert outcome.states == [HoldState(a, 0, 0, 100, None)]
    assert await state(budgets, a) == (0, 0, 100)
    assert await budgets.expired(T0 + DAY) == []


async def test_reserve_reports_the_first_failing_hold(budgets: RedisBudgets) -> None:
    a, b, c = hold("a", 10), hold("b", 5), hold("c", 1)
    outcome = await budgets.reserve(reservation("r1", 6, [a, b, c]))
    assert not outcome.ok and outcome.failed == outcome.states[1]
    assert outcome.failed is not None and outcome.failed.hold == b


async def test_reserve_an_existing_id_is_a_conflict(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await budgets.reserve(reservation("r1", 10, [a]))).ok
    with pytest.raises(Conflict):
        await budgets.reserve(reservation("r1", 10, [a]))
    assert await state(budgets, a) == (0, 10, 100)


async def test_states_of_nothing(budgets: RedisBudgets) -> None:
    assert await budgets.states([]) == []
    outcome = await budgets.reserve(reservation("r0", 5, []))
    assert outcome.ok and outcome.states == []


# --- settle and release ---------------------------------------------------------------------


async def test_settle_moves_reserved_to_used_exactly(
    budgets: RedisBudgets, client: aioredis.Redis
) -> None:
    a, b = hold("tenant:acme:day", 1_000), hold("feature:acme:search:day", 500, scope="feature")
    assert (await budgets.reserve(reservation("r1", 300, [a, b]))).ok
    assert (await budgets.reserve(reservation("r2", 100, [a]))).ok
    await budgets.settle([settlement("r1", 123)])
    assert await state(budgets, a) == (123, 100, 1_000)
    assert await state(budgets, b) == (123, 0, 500)
    await budgets.settle([settlement("r2", 100)])
    assert await state(budgets, a) == (223, 0, 1_000)
    # a settled reservation leaves nothing behind
    p = budgets.key_prefix
    assert await client.exists(f"{p}:res:r1", f"{p}:res:r2") == 0
    assert await client.zcard(f"{p}:leases") == 0


async def test_settle_with_zero_cost_is_a_release(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await budgets.reserve(reservation("r1", 100, [a]))).ok
    assert not (await budgets.reserve(reservation("r2", 1, [a]))).ok
    await budgets.settle([settlement("r1", 0, status="error", http_status=502)])
    assert await state(budgets, a) == (0, 0, 100)
    assert (await budgets.reserve(reservation("r3", 100, [a]))).ok
    reclaimed = await budgets.expired(T0 + DAY)
    assert [e.reservation_id for e in reclaimed] == ["r3"]


async def test_settling_twice_has_no_effect(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await budgets.reserve(reservation("r1", 50, [a]))).ok
    await budgets.settle([settlement("r1", 30)])
    await budgets.settle([settlement("r1", 30)])
    await budgets.settle([settlement("r1", 0, request_id="req-other")])
    assert await state(budgets, a) == (30, 0, 100)
    assert (await budgets.reserve(reservation("r2", 40, [a]))).ok
    await budgets.settle([settlement("r2", 10), settlement("r2", 0, request_id="req-dup")])
    assert await state(budgets, a) == (40, 0, 100)
    assert await budgets.expired(T0 + DAY) == []


async def test_settle_in_a_batch_with_plain_entries(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await budgets.reserve(reservation("r1", 50, [a]))).ok
    await budgets.settle([entry("plain-1", cost=7), settlement("r1", 20), entry("plain-2")])
    assert await state(budgets, a) == (20, 0, 100)
    await budgets.settle([entry("plain-3", cost=9)])
    await budgets.settle([])
    assert await state(budgets, a) == (20, 0, 100)


async def test_settle_unknown_reservation_is_ignored(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    await budgets.settle([settlement("ghost", 40)])
    assert await state(budgets, a) == (0, 0, 100)


# --- leases ---------------------------------------------------------------------------------


async def test_extend_keeps_a_reservation_alive(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await budgets.reserve(reservation("r1", 40, [a], expires_at=T0 + 10))).ok
    assert (await budgets.reserve(reservation("r2", 20, [a], expires_at=T0 + 10))).ok
    await budgets.extend(["r1", "nope"], T0 + 100)
    await budgets.extend([], T0 + 1_000)
    reclaimed = await budgets.expired(T0 + 50)
    assert [e.reservation_id for e in reclaimed] == ["r2"]
    assert await state(budgets, a) == (0, 40, 100)
    assert await budgets.expired(T0 + 100) == []  # expiring exactly now is still alive
    await budgets.settle([settlement("r1", 35)])
    assert await state(budgets, a) == (35, 0, 100)
    assert await budgets.expired(T0 + DAY) == []


async def test_extend_does_not_create_leases(budgets: RedisBudgets, client: aioredis.Redis) -> None:
    await budgets.extend(["ghost"], T0 + 100)
    assert await client.zcard(f"{budgets.key_prefix}:leases") == 0


async def test_reclaim_releases_hold_and_returns_the_unsettled_entry(
    budgets: RedisBudgets, client: aioredis.Redis
) -> None:
    a, b = hold("tenant:acme:day", 100), hold("key:k1:day", 100, scope="key")
    r1 = reservation("r1", 60, [a, b], expires_at=T0 + 30)
    assert (await budgets.reserve(r1)).ok
    assert not (await budgets.reserve(reservation("r2", 60, [a]))).ok
    assert await budgets.expired(T0 + 30) == []
    reclaimed = await budgets.expired(T0 + 31)
    assert reclaimed == [dataclasses.replace(r1.unsettled, finished_at=T0 + 31)]
    assert await state(budgets, a) == (0, 0, 100)
    assert await state(budgets, b) == (0, 0, 100)
    assert await budgets.expired(T0 + 1_000) == []
    # the reclaimed record is kept, with a TTL, for late settlement
    ttl = await client.ttl(f"{budgets.key_prefix}:res:r1")
    assert 0 < ttl <= RECLAIMED_TTL_S
    assert (await budgets.reserve(reservation("r2", 100, [a]))).ok
    assert await client.ttl(f"{budgets.key_prefix}:res:r2") == -1  # held: no TTL
    await budgets.extend(["r1"], T0 + 10 * DAY)  # a reclaimed lease is not revived
    reclaimed = await budgets.expired(T0 + 2_000)
    assert [e.reservation_id for e in reclaimed] == ["r2"]


async def test_expired_honours_its_limit(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 1_000)
    for i in range(5):
        assert (await budgets.reserve(reservation(f"r{i}", 10, [a], expires_at=T0 + i))).ok
    first = await budgets.expired(T0 + 10, limit=2)
    assert [e.reservation_id for e in first] == ["r0", "r1"]  # the oldest leases first
    assert await state(budgets, a) == (0, 30, 1_000)
    rest = await budgets.expired(T0 + 10)
    assert [e.reservation_id for e in rest] == ["r2", "r3", "r4"]
    assert await state(budgets, a) == (0, 0, 1_000)


async def test_late_settlement_counts_once(budgets: RedisBudgets, client: aioredis.Redis) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await budgets.reserve(reservation("r1", 60, [a], expires_at=T0 + 30))).ok
    assert len(await budgets.expired(T0 + 31)) == 1
    assert await state(budgets, a) == (0, 0, 100)
    await budgets.settle([settlement("r1", 45)])
    assert await state(budgets, a) == (45, 0, 100)
    assert await client.hget(f"{budgets.key_prefix}:res:r1", "state") == b"settled_late"
    await budgets.settle([settlement("r1", 45)])
    await budgets.settle([settlement("r1", 45, request_id="req-again")])
    assert await state(budgets, a) == (45, 0, 100)
    assert await budgets.expired(T0 + DAY) == []


async def test_late_release_of_reclaimed_hold_counts_nothing(budgets: RedisBudgets) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await budgets.reserve(reservation("r1", 60, [a], expires_at=T0 + 30))).ok
    await budgets.expired(T0 + 31)
    await budgets.settle([settlement("r1", 0, status="client_disconnected")])
    assert await state(budgets, a) == (0, 0, 100)


# --- windows --------------------------------------------------------------------------------


async def test_rolling_window_counts_only_recent_buckets(budgets: RedisBudgets) -> None:
    size = 60.0

    def at(minute: int) -> Hold:
        bucket = T0 + minute * size
        return hold("tenant:acme:rolling:1h", 100, bucket, buckets_from=bucket - 59 * size)

    for minute, cost in ((0, 10), (30, 20), (59, 30)):
        rid = f"m{minute}"
        assert (await budgets.reserve(reservation(rid, cost, [at(minute)]))).ok
        await budgets.settle([settlement(rid, cost)])
    assert (await state(budgets, at(59)))[0] == 60
    assert (await state(budgets, at(60)))[0] == 50
    assert (await state(budgets, at(89)))[0] == 50
    assert (await state(budgets, at(90)))[0] == 30
    assert (await state(budgets, at(118)))[0] == 30
    assert (await state(budgets, at(119)))[0] == 0
    assert (await budgets.reserve(reservation("big", 40, [at(60)]))).ok
    assert not (await budgets.reserve(reservation("no", 11, [at(60)]))).ok
    assert await state(budgets, at(60)) == (50, 40, 100)
    assert not (await budgets.reserve(reservation("no2", 61, [at(119)]))).ok
    assert (await budgets.reserve(reservation("yes", 60, [at(119)]))).ok
    assert await state(budgets, at(119)) == (0, 100, 100)
    assert await state(budgets, at(120)) == (0, 60, 100)


async def test_rolling_window_oldest_and_resets_at(budgets: RedisBudgets) -> None:
    size = 60.0

    def at(minute: int) -> Hold:
        bucket = T0 + minute * size
        return hold("k:rolling", 100, bucket, buckets_from=bucket - 59 * size, window_s=3600)

    (empty,) = await budgets.states([at(5)])
    assert empty.oldest is None and empty.resets_at == at(5).bucket + 3600
    assert (await budgets.reserve(reservation("a", 10, [at(3)]))).ok
    assert (await budgets.reserve(reservation("b", 10, [at(7)]))).ok
    (s,) = await budgets.states([at(10)])
    assert s.oldest == at(3).bucket and s.resets_at == at(3).bucket + 3600
    await budgets.settle([settlement("a", 0)])  # bucket 3 now holds nothing
    (s,) = await budgets.states([at(10)])
    assert s.oldest == at(7).bucket
    (s,) = await budgets.states([at(67)])  # bucket 7 has left the window
    assert s.oldest is None and (s.used, s.reserved) == (0, 0)


async def test_rolling_window_reservations_fall_out(budgets: RedisBudgets) -> None:
    size = 60.0

    def at(minute: int) -> Hold:
        bucket = T0 + minute * size
        return hold("k:rolling", 100, bucket, buckets_from=bucket - 59 * size)

    assert (await budgets.reserve(reservation("old", 90, [at(0)]))).ok
    assert not (await budgets.reserve(reservation("blocked", 20, [at(59)]))).ok
    assert (await budgets.reserve(reservation("later", 100, [at(60)]))).ok
    assert await state(budgets, at(60)) == (0, 100, 100)
    await budgets.settle([settlement("old", 90)])
    assert await state(budgets, at(60)) == (0, 100, 100)
    # minute 0's window holds the 90 it settled, and counts minute 60's newer hold too (a
    # reserve whose clock lags must see what newer requests hold)
    assert await state(budgets, at(0)) == (90, 100, 100)


async def test_fractional_buckets_round_trip(budgets: RedisBudgets) -> None:
    bucket = T0 + 0.1 + 0.2  # not a short decimal
    h = hold("k:frac", 100, bucket, buckets_from=bucket - 1e-6, window_s=1)
    assert (await budgets.reserve(reservation("f", 7, [h]))).ok
    (s,) = await budgets.states([h])
    assert (s.reserved, s.oldest) == (7, bucket)
    assert await state(budgets, hold("k:frac", 100, bucket + 1e-6)) == (0, 0, 100)


async def test_rollover_adds_unused_previous_window_up_to_cap(budgets: RedisBudgets) -> None:
    prev, cur = T0 - DAY, T0

    def current(cap: int) -> Hold:
        return hold(
            "tenant:acme:day", 100, cur, rollover_cap=cap, rollover_bucket=prev, base_limit=100
        )

    assert (await state(budgets, current(50)))[2] == 150
    assert (await state(budgets, current(0)))[2] == 100
    yesterday = hold("tenant:acme:day", 100, prev)
    assert (await budgets.reserve(reservation("y", 70, [yesterday]))).ok
    await budgets.settle([settlement("y", 70)])
    assert (await state(budgets, current(50)))[2] == 130
    assert (await state(budgets, current(20)))[2] == 120
    assert (await state(budgets, current(50)))[0] == 0
    assert (await budgets.reserve(reservation("y2", 20, [yesterday]))).ok
    assert (await state(budgets, current(50)))[2] == 130  # only spend reduces rollover
    assert (await budgets.reserve(reservation("t1", 130, [current(50)]))).ok
    failed = await budgets.reserve(reservation("t2", 1, [current(50)]))
    assert not failed.ok and failed.failed is not None and failed.failed.limit == 130


async def test_rollover_never_negative_when_previous_overspent(budgets: RedisBudgets) -> None:
    prev = T0 - DAY
    yesterday = hold("tenant:acme:day", 200, prev)
    assert (await budgets.reserve(reservation("y", 150, [yesterday]))).ok
    await budgets.settle([settlement("y", 150)])
    today = hold("tenant:acme:day", 100, T0, rollover_cap=50, rollover_bucket=prev, base_limit=100)
    assert await state(budgets, today) == (0, 0, 100)


async def test_holds_from_specs_with_rollover(budgets: RedisBudgets) -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("America/New_York")
    specs = [BudgetSpec("tenant", parse_period("day"), 1_000, rollover_cap=400)]
    day1 = 1_767_286_800.0  # 2026-01-01T12:00:00-05:00
    (h1,) = holds(specs, tenant="acme", key="k1", feature=None, user=None, now=day1, zone=zone)
    assert (await budgets.reserve(reservation("d1", 900, [h1]))).ok
    await budgets.settle([settlement("d1", 800)])
    (h2,) = holds(
        specs, tenant="acme", key="k1", feature=None, user=None, now=day1 + DAY, zone=zone
    )
    assert h2.rollover_bucket == h1.bucket
    assert await state(budgets, h2) == (0, 0, 1_200)


# --- exact money beyond 2^53 ------------------------------------------------------------------


@pytest.mark.parametrize("scale", [10**15, 10**16, 10**17, 2**53, 10**18])
async def test_large_amounts_are_exact(budgets: RedisBudgets, scale: int) -> None:
    # a float would confuse limit and limit + 1 at these sizes
    limit = 3 * scale + 1
    a = hold("tenant:big:day", limit)
    assert (await budgets.reserve(reservation("r1", scale, [a]))).ok
    assert (await budgets.reserve(reservation("r2", 2 * scale, [a]))).ok
    assert (await budgets.reserve(reservation("r3", 1, [a]))).ok  # exactly the limit
    over = await budgets.reserve(reservation("r4", 1, [a]))
    assert not over.ok and over.failed is not None
    assert (over.failed.used, over.failed.reserved, over.failed.remaining) == (0, limit, 0)
    await budgets.settle([settlement("r1", scale - 1), settlement("r3", 1)])
    assert await state(budgets, a) == (scale, 2 * scale, limit)
    await budgets.settle([settlement("r2", 2 * scale - 7)])
    assert await state(budgets, a) == (3 * scale - 7, 0, limit)
    assert (await budgets.reserve(reservation("r5", 8, [a]))).ok
    assert not (await budgets.reserve(reservation("r6", 1, [a]))).ok


async def test_sums_and_limits_beyond_64_bits_are_exact(budgets: RedisBudgets) -> None:
    size = 60.0
    big = 2**62 + 12_345  # one bucket holds this; two of them exceed 2^63

    def at(minute: int, limit: int) -> Hold:
        bucket = T0 + minute * size
        return hold("g:rolling", limit, bucket, buckets_from=bucket - 59 * size)

    limit = 3 * big + 1
    assert (await budgets.reserve(reservation("a", big, [at(0, limit)]))).ok
    assert (await budgets.reserve(reservation("b", big, [at(1, limit)]))).ok
    assert (await budgets.reserve(reservation("c", big + 1, [at(2, limit)]))).ok
    assert not (await budgets.reserve(reservation("d", 1, [at(3, limit)]))).ok
    assert await state(budgets, at(3, limit)) == (0, limit, limit)
    await budgets.settle([settlement("a", big), settlement("b", big - 1)])
    assert await state(budgets, at(3, limit)) == (2 * big - 1, big + 1, limit)
    # rollover on a huge previous window is exact as well
    h = hold("g:rolling", 5, T0 + 3 * DAY, rollover_cap=2**70, rollover_bucket=T0, base_limit=2**64)
    assert (await state(budgets, h))[2] == 5 + 2**64 - big


async def test_a_counter_never_leaves_64_bits(budgets: RedisBudgets) -> None:
    a = hold("g:day", 2**66)
    assert (await budgets.reserve(reservation("r1", 2**63 - 1, [a]))).ok
    with pytest.raises(FareboxError, match="64-bit"):
        await budgets.reserve(reservation("r2", 1, [a]))
    assert await state(budgets, a) == (0, 2**63 - 1, 2**66)
    assert [e.reservation_id for e in await budgets.expired(T0 + DAY)] == ["r1"]
    assert await state(budgets, a) == (0, 0, 2**66)


# --- against the reference implementation -------------------------------------------------------


async def test_random_operations_match_memory_budgets(budgets: RedisBudgets) -> None:
    rng = random.Random(20250616)
    ref = MemoryBudgets()
    ledger: dict[str, LedgerEntry] = {}
    size = 60.0
    open_ids: list[str] = []
    clock = T0

    def pick_holds(now: float) -> list[Hold]:
        bucket = T0 + (now - T0) // size * size
        rolling = hold("t:rolling", 10**17, bucket, buckets_from=bucket - 9 * size, window_s=600)
        day = T0 + (now - T0) // 600 * 600
        calendar = hold(
            "t:cal", 3 * 10**16, day, rollover_cap=10**16, rollover_bucket=day - 600,
            base_limit=3 * 10**16,
        )  # fmt: skip
        feature = hold("f:search", 2 * 10**16 + 3, bucket, buckets_from=bucket - 4 * size)
        chosen = [h for h in (rolling, calendar, feature) if rng.random() < 0.7]
        return chosen or [rolling]

    for step in range(400):
        clock += rng.choice([0.0, 1.0, 7.5, 30.0, 61.0])
        op = rng.random()
        if op < 0.5:
            rid = f"r{step}"
            amount = rng.choice([1, 10**15, 3 * 10**15 + 1, 7 * 10**15 - 1])
            res = reservation(rid, amount, pick_holds(clock), expires_at=clock + 90)
            got, want = await budgets.reserve(res), ref.reserve(res)
            assert (got.ok, got.failed is None) == (want.ok, want.failed is None), step
            if got.failed is not None and want.failed is not None:
                assert got.failed.hold == want.failed.hold
            pairs = zip(got.states, want.states, strict=True)
            assert [(g.used, g.reserved, g.limit) for g, _ in pairs] == [
                (w.used, w.reserved, w.limit) for w in want.states
            ]
            if got.ok:
                open_ids.append(rid)
        elif op < 0.75 and open_ids:
            rid = rng.choice(open_ids)
            cost = rng.choice([0, 1, 10**15 - 1])
            batch = [settlement(rid, cost)]
            await budgets.settle(batch)
            ref.settle(batch, ledger)
        elif op < 0.85 and open_ids:
            ids = rng.sample(open_ids, min(3, len(open_ids)))
            await budgets.extend(ids, clock + 120)
            ref.extend(ids, clock + 120)
        else:
            got_e, want_e = await budgets.expired(clock), ref.expired(clock)
            assert sorted(e.request_id for e in got_e) == sorted(e.request_id for e in want_e)
            assert {e.request_id: e for e in got_e} == {e.request_id: e for e in want_e}
        probe = pick_holds(clock)
        assert await budgets.states(probe) == [ref.state(h) for h in probe], step


# --- keys ---------------------------------------------------------------------------------------


async def test_every_key_shares_one_hash_slot(
    budgets: RedisBudgets, client: aioredis.Redis
) -> None:
    a = hold("tenant:ünïcode {weird}:day", 100)
    assert (await budgets.reserve(reservation("r1", 10, [a], expires_at=T0))).ok
    assert (await budgets.reserve(reservation("r2", 10, [a]))).ok
    await budgets.expired(T0 + 1)
    await budgets.settle([settlement("r1", 3)])
    await budgets.bump_epoch()
    assert await state(budgets, a) == (3, 10, 100)
    keys = [k async for k in client.scan_iter(match=f"{budgets.key_prefix}*")]
    assert len(keys) >= 5
    assert {key_slot(k) for k in keys} == {key_slot(budgets.key_prefix.encode())}


async def test_a_client_decoding_responses_works_too(budgets: RedisBudgets) -> None:
    c = await connect(decode_responses=True)
    try:
        other = RedisBudgets(c, budgets.key_prefix[1:-1])
        a = hold("tenant:acme:day", 100)
        assert (await other.reserve(reservation("r1", 40, [a], expires_at=T0))).ok
        assert [e.reservation_id for e in await other.expired(T0 + 1)] == ["r1"]
        await other.bump_epoch()
        assert await other.auth_epoch() == 1
        (s,) = await other.states([a])
        assert (s.used, s.reserved, s.limit) == (0, 0, 100)
    finally:
        await c.aclose()


# --- auth epoch ---------------------------------------------------------------------------------


async def test_auth_epoch(budgets: RedisBudgets, client: aioredis.Redis) -> None:
    assert await budgets.auth_epoch() == 0
    await budgets.bump_epoch()
    await budgets.bump_epoch()
    assert await budgets.auth_epoch() == 2
    other = RedisBudgets(client, budgets.key_prefix[1:-1])
    assert await other.auth_epoch() == 2


# --- concurrency --------------------------------------------------------------------------------

RACE_AMOUNT = 1_000_000_000_000_003  # about 10^18: far beyond a double's exact integers
RACE_WINNERS = 37
RACE_HOLD = hold("tenant:race:day", RACE_AMOUNT * RACE_WINNERS + RACE_AMOUNT - 1)


async def test_concurrent_reserves_from_three_clients(budgets: RedisBudgets) -> None:
    prefix = budgets.key_prefix[1:-1]
    clients = [await connect() for _ in range(3)]
    try:
        stores = [RedisBudgets(c, prefix) for c in clients]
        outcomes = await asyncio.gather(
            *(
                stores[i % 3].reserve(reservation(f"c{i}", RACE_AMOUNT, [RACE_HOLD]))
                for i in range(200)
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    assert sum(o.ok for o in outcomes) == RACE_WINNERS
    assert all(o.failed is None or o.failed.remaining < RACE_AMOUNT for o in outcomes)
    assert await state(budgets, RACE_HOLD) == (0, RACE_WINNERS * RACE_AMOUNT, RACE_HOLD.limit)
    winners = [f"c{i}" for i, o in enumerate(outcomes) if o.ok]
    await budgets.settle([settlement(rid, RACE_AMOUNT) for rid in winners])
    assert await state(budgets, RACE_HOLD) == (RACE_WINNERS * RACE_AMOUNT, 0, RACE_HOLD.limit)


RACE_PROCS = 3
RACE_TRIES = 40


def _race_worker(prefix: str, worker: int, barrier: Any, results: Any) -> None:
    async def main() -> list[bool]:
        client = aioredis.Redis(host=HOST, port=PORT)
        try:
            store = RedisBudgets(client, prefix)
            await client.ping()
            barrier.wait(timeout=60)
            tries = [
                store.reserve(reservation(f"p{worker}-{i}", RACE_AMOUNT, [RACE_HOLD]))
                for i in range(RACE_TRIES)
            ]
            outcomes = await asyncio.gather(*tries)
            won = [f"p{worker}-{i}" for i, o in enumerate(outcomes) if o.ok]
            await store.settle([settlement(rid, RACE_AMOUNT) for rid in won])
            return [o.ok for o in outcomes]
        finally:
            await client.aclose()

    results.put((worker, asyncio.run(main())))


def test_processes_race_for_one_budget() -> None:
    prefix = f"fbxtest-{uuid.uuid4().hex}"

    async def check() -> tuple[int, int, int] | None:
        client = await connect()
        try:
            budgets = RedisBudgets(client, prefix)
            return await state(budgets, RACE_HOLD)
        finally:
            await drop(client, prefix)
            await client.aclose()

    assert asyncio.run(check()) == (0, 0, RACE_HOLD.limit)  # also skips without Redis
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACE_PROCS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(prefix, w, barrier, results))
        for w in range(RACE_PROCS)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        results.close()
        results.join_thread()

        async def cleanup() -> tuple[int, int, int]:
            client = await connect()
            try:
                return await state(RedisBudgets(client, prefix), RACE_HOLD)
            finally:
                await drop(client, prefix)
                await client.aclose()

        final = asyncio.run(cleanup())
    assert sorted(outcomes) == list(range(RACE_PROCS))
    assert sum(sum(w) for w in outcomes.values()) == RACE_WINNERS
    assert final == (RACE_WINNERS * RACE_AMOUNT, 0, RACE_HOLD.limit)
