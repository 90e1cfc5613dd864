"""The ``ReservationStore`` contract for counters with units, on every backend that keeps
counters (memory, SQLite, single-process SQLite, PostgreSQL plus Redis): one reservation
holds pico-USD against budgets and a request, its estimated tokens and a slot in flight against
rate limits, atomically; settlement adds the exact cost, one request and the actual tokens;
a reclaimed lease frees its slot; old rate-limit buckets are dropped."""

from __future__ import annotations

import sqlite3
from typing import Any

from farebox.core.budgets import Hold
from farebox.core.records import Reservation
from farebox.gateway.rate_limits import LimitSpec, holds
from tests.contracts.backends import ALL_IN_ONE
from tests.contracts.builders import T0, entry, hold, settlement, state

BACKENDS = ALL_IN_ONE


SPEC = LimitSpec("key", requests=3, tokens=1000, concurrent=2, model=None, window_s=60)


def limits(now: float = T0, spec: LimitSpec = SPEC) -> list[Hold]:
    return holds([spec], tenant="acme", key="k1", user=None, ip=None, model="m", now=now)


def reserve_for(rid: str, amount: int, tokens: int, on: list[Hold], **kw: Any) -> Reservation:
    placeholder = entry(f"req-{rid}", status="unsettled", http_status=0, reservation_id=rid)
    return Reservation(rid, amount, tuple(on), kw.get("expires_at", T0 + 60), placeholder, tokens)


async def test_each_counter_holds_and_settles_in_its_unit(store: Any) -> None:
    budget = hold("tenant:acme:day", 10_000)
    requests, tokens, slots = limits()
    assert (requests.unit, tokens.unit, slots.unit) == ("requests", "tokens", "concurrent")
    outcome = await store.reserve(reserve_for("r1", 700, 400, [budget, requests, tokens, slots]))
    assert outcome.ok
    assert [(s.used, s.reserved) for s in outcome.states] == [(0, 700), (0, 1), (0, 400), (0, 1)]
    await store.append_ledger([settlement("r1", 650, input_tokens=30, output_tokens=90)])
    assert await state(store, budget) == (650, 0, 10_000)
    assert await state(store, requests) == (1, 0, 3)
    assert await state(store, tokens) == (120, 0, 1000)  # corrected to the actual usage
    assert await state(store, slots) == (0, 0, 2)  # no longer in flight


async def test_a_full_rate_counter_refuses_without_touching_the_others(store: Any) -> None:
    budget = hold("tenant:acme:day", 10_000)
    counters = [budget, *limits()]
    assert (await store.reserve(reserve_for("a", 10, 100, counters))).ok
    assert (await store.reserve(reserve_for("b", 10, 100, counters))).ok
    third = await store.reserve(reserve_for("c", 10, 100, counters))
    assert not third.ok and third.failed is not None and third.failed.hold.unit == "concurrent"
    assert await state(store, budget) == (0, 20, 10_000)
    await store.append_ledger([settlement("a", 5, input_tokens=1, output_tokens=1)])
    assert (await store.reserve(reserve_for("c", 10, 100, counters))).ok
    too_many_tokens = await store.reserve(reserve_for("d", 10, 900, [budget, limits()[1]]))
    assert not too_many_tokens.ok and too_many_tokens.failed is not None
    assert too_many_tokens.failed.hold.unit == "tokens"
    assert await state(store, budget) == (5, 20, 10_000)


async def test_the_request_window_slides(store: Any) -> None:
    for i in range(3):
        now = T0 + 20 * i
        res = reserve_for(f"r{i}", 0, 0, [limits(now)[0]])
        assert (await store.reserve(res)).ok
        await store.append_ledger([settlement(f"r{i}", 0)])
    # three in the last minute: full until the first one's 3 s bucket leaves, 63 s after it
    # began (T0 is a multiple of 3)
    assert T0 % 3 == 0
    refused = await store.reserve(reserve_for("x", 0, 0, [limits(T0 + 62.9)[0]]))
    assert not refused.ok and refused.failed is not None
    assert refused.failed.resets_at == T0 + 63
    assert (await store.reserve(reserve_for("y", 0, 0, [limits(T0 + 63)[0]]))).ok


async def test_a_reclaimed_lease_frees_its_slot(store: Any) -> None:
    slots = limits()[2]
    for rid in ("a", "b"):
        assert (await store.reserve(reserve_for(rid, 0, 0, [slots], expires_at=T0 + 5))).ok
    assert not (await store.reserve(reserve_for("c", 0, 0, [slots]))).ok
    reclaimed = await store.reclaim_expired(T0 + 10)
    assert sorted(e.reservation_id for e in reclaimed) == ["a", "b"]
    assert await state(store, slots) == (0, 0, 2)
    assert (await store.reserve(reserve_for("c", 0, 0, [slots]))).ok


async def test_old_rate_buckets_are_dropped_on_sqlite(tmp_path: Any) -> None:
    from farebox.stores.sqlite.store import SQLiteStore

    db = SQLiteStore(tmp_path / "f.db")
    await db.open()
    try:
        slots = limits()[2]
        assert (await db.reserve(reserve_for("held", 0, 0, [slots], expires_at=T0 + 9e9))).ok
        for i in range(5):
            res = reserve_for(f"r{i}", 0, 10, limits(T0 + 100 * i)[:2])
            assert (await db.reserve(res)).ok
            await db.append_ledger([settlement(f"r{i}", 0, input_tokens=5)])
        await db.reclaim_expired(T0 + 3 * 3600)
    finally:
        await db.close()
    with sqlite3.connect(tmp_path / "f.db") as conn:
        rows = conn.execute("SELECT key, reserved FROM budget_counters").fetchall()
    assert rows == [(slots.key, 1)]  # the window buckets are gone; the slot in flight stays


async def test_old_rate_buckets_are_dropped_in_redis(store: Any) -> None:
    from farebox.stores.scaled import ScaledStore

    if not isinstance(store, ScaledStore):
        return  # Redis-only: SQLite prunes in its lease upkeep (above), memory never persists
    for i in range(3):
        res = reserve_for(f"r{i}", 0, 10, limits(T0 + 100 * i)[:1])
        assert (await store.reserve(res)).ok
        await store.append_ledger([settlement(f"r{i}", 0)])
    later = limits(T0 + 3 * 3600)[0]
    assert (await store.reserve(reserve_for("late", 0, 0, [later]))).ok
    layout = store._budgets.layout  # a tenant's counters live in its own slot (issue 18)
    slot = layout.slot(later.tenant)
    key = layout.buckets(slot, later.key)
    assert [float(b) for b in await store._client.zrange(key, 0, -1)] == [later.bucket]
    counter = await store._client.hgetall(layout.counter(slot, later.key))
    used = [f for f in counter if f.startswith(b"u")]
    assert len(used) <= 1  # only the live bucket may have a field


async def test_a_lagging_clock_counts_the_newer_buckets(store: Any) -> None:
    """A reserve whose clock lags (a replica's clock, or a reserve that waited after reading
    the time) must still count what newer requests hold: over a bucket boundary, the late
    ones would otherwise see only the older buckets and admit past the limit."""
    newer = limits(T0 + 3)[0]  # the next 3 s bucket
    for i in range(3):
        assert (await store.reserve(reserve_for(f"n{i}", 0, 0, [newer]))).ok
    lagging = limits(T0 + 2.9)[0]  # the bucket before, read just before the boundary
    assert lagging.bucket < newer.bucket and lagging.buckets_from < newer.buckets_from
    refused = await store.reserve(reserve_for("late", 0, 0, [lagging]))
    assert not refused.ok and refused.failed is not None
    assert refused.failed.hold.unit == "requests"
    assert (refused.failed.used, refused.failed.reserved) == (0, 3)
    assert await state(store, lagging) == (0, 3, 3)
    await store.append_ledger([settlement(f"n{i}", 0) for i in range(3)])
    assert await state(store, lagging) == (3, 0, 3)


async def test_a_lagging_clock_counts_newer_spend_in_a_rolling_budget(store: Any) -> None:
    key, window = "tenant:acme:rolling", 86_400
    newer = hold(key, 1_000, bucket=T0 + 3600, buckets_from=T0 + 3600 - window, window_s=window)
    assert (await store.reserve(reserve_for("new", 1_000, 0, [newer]))).ok
    lagging = hold(key, 1_000, bucket=T0, buckets_from=T0 - window, window_s=window)
    refused = await store.reserve(reserve_for("late", 1, 0, [lagging]))
    assert not refused.ok
    assert await state(store, lagging) == (0, 1_000, 1_000)
