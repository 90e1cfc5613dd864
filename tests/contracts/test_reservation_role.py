"""The ``ReservationStore`` contract: reserve, settle (through ``append_ledger``), release,
lease expiry, rollover and alerts, on every backend that keeps counters (memory, SQLite,
single-process SQLite, PostgreSQL plus Redis); plus a multi-process race on one SQLite file.
Counters in other units (rate limits) are in ``test_reservation_role_rate_limits``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from farebox.core.budgets import BudgetSpec, Hold, holds
from farebox.core.periods import parse_period
from farebox.core.records import LedgerEntry
from farebox.stores.sqlite.store import SQLiteStore
from races import race_on_sqlite
from tests.contracts.backends import ALL_IN_ONE
from tests.contracts.builders import DAY, T0, entry, hold, reservation, settlement, state

BACKENDS = ALL_IN_ONE
UTC = ZoneInfo("UTC")


# --- reserve -----------------------------------------------------------------------------


async def test_reserve_holds_amount_on_every_hold(store: Any) -> None:
    a, b = hold("tenant:acme:day", 100), hold("key:k1:day", 50, scope="key")
    outcome = await store.reserve(reservation("r1", 40, [a, b]))
    assert outcome.ok is True and outcome.failed is None
    assert [(s.hold.key, s.used, s.reserved, s.limit) for s in outcome.states] == [
        ("tenant:acme:day", 0, 40, 100),
        ("key:k1:day", 0, 40, 50),
    ]
    assert await state(store, a) == (0, 40, 100)
    assert await state(store, b) == (0, 40, 50)


async def test_reserve_failure_on_second_hold_leaves_first_untouched(store: Any) -> None:
    a, b = hold("tenant:acme:day", 100), hold("key:k1:day", 50, scope="key")
    assert (await store.reserve(reservation("r1", 40, [a, b]))).ok
    failed = await store.reserve(reservation("r2", 20, [a, b]))  # fits a (60), not b (60 > 50)
    assert failed.ok is False
    assert failed.failed is not None and failed.failed.hold == b
    assert (failed.failed.used, failed.failed.reserved) == (0, 40)
    # "as found": the failed outcome reports the counters before the attempt
    assert [(s.hold.key, s.reserved) for s in failed.states] == [
        ("tenant:acme:day", 40),
        ("key:k1:day", 40),
    ]
    assert await state(store, a) == (0, 40, 100)
    assert await state(store, b) == (0, 40, 50)
    # the failed reservation is not a lease: it is never reclaimed and cannot be settled
    reclaimed = await store.reclaim_expired(T0 + 10 * DAY)
    assert [e.reservation_id for e in reclaimed] == ["r1"]
    await store.append_ledger([settlement("r2", 20)])
    assert await state(store, a) == (0, 0, 100)
    assert await state(store, b) == (0, 0, 50)


async def test_reserve_exact_fit_then_one_more_fails(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await store.reserve(reservation("r1", 60, [a]))).ok
    assert (await store.reserve(reservation("r2", 40, [a]))).ok  # exactly the limit
    over = await store.reserve(reservation("r3", 1, [a]))
    assert not over.ok and over.failed is not None and over.failed.remaining == 0
    assert await state(store, a) == (0, 100, 100)


async def test_reserve_over_limit_on_its_own_fails(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    outcome = await store.reserve(reservation("r1", 101, [a]))
    assert outcome.ok is False and outcome.failed is not None and outcome.failed.hold == a
    assert await state(store, a) == (0, 0, 100)


# --- settle and release ------------------------------------------------------------------


async def test_settle_moves_reserved_to_used_exactly(store: Any) -> None:
    a, b = hold("tenant:acme:day", 1_000), hold("feature:acme:search:day", 500, scope="feature")
    assert (await store.reserve(reservation("r1", 300, [a, b]))).ok
    assert (await store.reserve(reservation("r2", 100, [a]))).ok
    await store.append_ledger([settlement("r1", 123)])  # below the reservation
    assert await state(store, a) == (123, 100, 1_000)
    assert await state(store, b) == (123, 0, 500)
    await store.append_ledger([settlement("r2", 100)])  # exactly the reservation
    assert await state(store, a) == (223, 0, 1_000)
    costs = {e.reservation_id: e.cost for e in await store.ledger()}
    assert costs == {"r1": 123, "r2": 100}


async def test_settle_with_zero_cost_is_a_release(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await store.reserve(reservation("r1", 100, [a]))).ok
    assert not (await store.reserve(reservation("r2", 1, [a]))).ok
    await store.append_ledger([settlement("r1", 0, status="error", http_status=502)])
    assert await state(store, a) == (0, 0, 100)
    assert (await store.reserve(reservation("r3", 100, [a]))).ok
    # a released reservation is gone: it is not reclaimed later
    reclaimed = await store.reclaim_expired(T0 + DAY)
    assert [e.reservation_id for e in reclaimed] == ["r3"]


async def test_settling_twice_has_no_effect(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await store.reserve(reservation("r1", 50, [a]))).ok
    await store.append_ledger([settlement("r1", 30)])
    await store.append_ledger([settlement("r1", 30)])  # a retried write
    await store.append_ledger([settlement("r1", 0, request_id="req-other")])  # another entry
    assert await state(store, a) == (30, 0, 100)
    # several entries for one reservation in one batch: only the first settles
    assert (await store.reserve(reservation("r2", 40, [a]))).ok
    await store.append_ledger([settlement("r2", 10), settlement("r2", 0, request_id="req-dup")])
    assert await state(store, a) == (40, 0, 100)
    # nothing is left to reclaim
    assert await store.reclaim_expired(T0 + DAY) == []


async def test_settle_in_a_batch_with_plain_entries(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await store.reserve(reservation("r1", 50, [a]))).ok
    await store.append_ledger([entry("plain-1", cost=7), settlement("r1", 20), entry("plain-2")])
    assert await state(store, a) == (20, 0, 100)  # entries without a reservation are not spend
    assert {e.request_id for e in await store.ledger()} == {"plain-1", "req-r1", "plain-2"}


async def test_settle_unknown_reservation_is_ignored(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    await store.append_ledger([settlement("ghost", 40)])
    assert await state(store, a) == (0, 0, 100)
    assert [e.request_id for e in await store.ledger()] == ["req-ghost"]


async def test_settling_at_once_is_the_same_settlement(store: Any) -> None:
    """``append_ledger_now`` (the write of a request served alone) settles exactly like
    ``append_ledger``, or writes nothing and says so."""
    a = hold("tenant:acme:day", 1_000)
    assert (await store.reserve(reservation("r1", 300, [a]))).ok
    assert (await store.reserve(reservation("r2", 200, [a]))).ok
    if not store.append_ledger_now([settlement("r1", 123)]):
        assert store.__class__.__name__ == "ScaledStore"  # over the network: always queued
        assert await state(store, a) == (0, 500, 1_000)
        assert await store.ledger() == []
        return
    assert await state(store, a) == (123, 200, 1_000)
    assert store.append_ledger_now([settlement("r1", 123)])  # a retried write: no effect
    assert store.append_ledger_now([entry("plain", cost=9), settlement("r2", 200)])
    assert store.append_ledger_now([])
    assert await state(store, a) == (323, 0, 1_000)
    costs = sorted((e.request_id, e.cost) for e in await store.ledger())
    assert costs == [("plain", 9), ("req-r1", 123), ("req-r2", 200)]


# --- leases ------------------------------------------------------------------------------


async def test_extend_leases_keeps_a_reservation_alive(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await store.reserve(reservation("r1", 40, [a], expires_at=T0 + 10))).ok
    assert (await store.reserve(reservation("r2", 20, [a], expires_at=T0 + 10))).ok
    await store.extend_leases(["r1", "nope"], T0 + 100)
    await store.extend_leases([], T0 + 1_000)
    reclaimed = await store.reclaim_expired(T0 + 50)  # past r1's old expiry
    assert [e.reservation_id for e in reclaimed] == ["r2"]
    assert await state(store, a) == (0, 40, 100)
    # a lease that expires exactly now is still alive
    assert await store.reclaim_expired(T0 + 100) == []
    # still alive: it settles normally
    await store.append_ledger([settlement("r1", 35)])
    assert await state(store, a) == (35, 0, 100)
    assert await store.reclaim_expired(T0 + DAY) == []


async def test_reclaim_releases_hold_and_writes_one_unsettled_entry(store: Any) -> None:
    a, b = hold("tenant:acme:day", 100), hold("key:k1:day", 100, scope="key")
    assert (await store.reserve(reservation("r1", 60, [a, b], expires_at=T0 + 30))).ok
    assert not (await store.reserve(reservation("r2", 60, [a]))).ok  # the holder pins it...
    assert await store.reclaim_expired(T0 + 30) == []  # not yet expired
    reclaimed = await store.reclaim_expired(T0 + 31)
    assert len(reclaimed) == 1
    (unsettled,) = reclaimed
    assert unsettled.status == "unsettled" and unsettled.request_id == "req-r1"
    assert unsettled.reservation_id == "r1" and unsettled.finished_at == T0 + 31
    assert await state(store, a) == (0, 0, 100)
    assert await state(store, b) == (0, 0, 100)
    # ...until it is reclaimed; a second sweep finds nothing
    assert await store.reclaim_expired(T0 + 1_000) == []
    rows = await store.ledger()
    assert [(e.request_id, e.status) for e in rows] == [("req-r1", "unsettled")]
    assert rows[0] == unsettled
    assert (await store.reserve(reservation("r2", 100, [a]))).ok
    # extending a reclaimed lease does not bring it back
    await store.extend_leases(["r1"], T0 + 10 * DAY)
    reclaimed = await store.reclaim_expired(T0 + 2_000)
    assert [e.reservation_id for e in reclaimed] == ["r2"]  # r1 was not revived
    assert {e.request_id for e in await store.ledger() if e.status == "unsettled"} == {
        "req-r1",
        "req-r2",
    }


async def test_late_settlement_replaces_the_unsettled_entry(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await store.reserve(reservation("r1", 60, [a], expires_at=T0 + 30))).ok
    assert len(await store.reclaim_expired(T0 + 31)) == 1
    assert await state(store, a) == (0, 0, 100)
    late = settlement("r1", 45, started_at=T0, tenant_id="acme")
    await store.append_ledger([late])
    assert await state(store, a) == (45, 0, 100)
    rows = await store.ledger("acme")
    assert rows == [late]  # the placeholder is gone, the real entry is there
    # settling it again changes nothing
    await store.append_ledger([late])
    await store.append_ledger([settlement("r1", 45, request_id="req-again")])
    assert await state(store, a) == (45, 0, 100)
    assert await store.reclaim_expired(T0 + DAY) == []
    assert [e.request_id for e in await store.ledger() if e.status == "unsettled"] == []


async def test_late_release_of_reclaimed_hold_counts_nothing(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    assert (await store.reserve(reservation("r1", 60, [a], expires_at=T0 + 30))).ok
    await store.reclaim_expired(T0 + 31)
    await store.append_ledger([settlement("r1", 0, status="client_disconnected")])
    assert await state(store, a) == (0, 0, 100)
    assert [(e.request_id, e.status, e.cost) for e in await store.ledger()] == [
        ("req-r1", "client_disconnected", 0)
    ]


async def test_reclaimed_and_settled_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "reopen.db"
    a = hold("tenant:acme:day", 100)
    one = SQLiteStore(path)
    await one.open()
    try:
        assert (await one.reserve(reservation("r1", 30, [a], expires_at=T0 + 10))).ok
        assert (await one.reserve(reservation("r2", 50, [a], expires_at=T0 + 1_000))).ok
    finally:
        await one.close()  # the holder "dies" with both leases outstanding
    two = SQLiteStore(path)
    await two.open()
    try:
        assert await state(two, a) == (0, 80, 100)
        assert [e.reservation_id for e in await two.reclaim_expired(T0 + 20)] == ["r1"]
        await two.append_ledger([settlement("r2", 40)])
        assert await state(two, a) == (40, 0, 100)
    finally:
        await two.close()


# --- windows -----------------------------------------------------------------------------


async def test_rolling_window_counts_only_recent_buckets(store: Any) -> None:
    size = 60.0  # a one-hour rolling window in one-minute buckets

    def at(minute: int) -> Hold:
        bucket = T0 + minute * size
        return hold("tenant:acme:rolling:1h", 100, bucket, buckets_from=bucket - 59 * size)

    for minute, cost in ((0, 10), (30, 20), (59, 30)):
        rid = f"m{minute}"
        assert (await store.reserve(reservation(rid, cost, [at(minute)]))).ok
        await store.append_ledger([settlement(rid, cost)])
    assert (await state(store, at(59)))[0] == 60
    assert (await state(store, at(60)))[0] == 50  # minute 0 has left the window
    assert (await state(store, at(89)))[0] == 50
    assert (await state(store, at(90)))[0] == 30
    assert (await state(store, at(118)))[0] == 30
    assert (await state(store, at(119)))[0] == 0  # minute 59 has left as well
    # a reservation is counted in its bucket only while that bucket is in the window
    assert (await store.reserve(reservation("big", 40, [at(60)]))).ok
    assert not (await store.reserve(reservation("no", 11, [at(60)]))).ok  # 50 + 40 + 11 > 100
    assert await state(store, at(60)) == (50, 40, 100)
    assert not (await store.reserve(reservation("no2", 61, [at(119)]))).ok  # 0 + 40 + 61
    assert (await store.reserve(reservation("yes", 60, [at(119)]))).ok
    assert await state(store, at(119)) == (0, 100, 100)
    assert await state(store, at(120)) == (0, 60, 100)  # minute 60's hold has left


async def test_rolling_window_reservations_fall_out(store: Any) -> None:
    size = 60.0

    def at(minute: int) -> Hold:
        bucket = T0 + minute * size
        return hold("k:rolling", 100, bucket, buckets_from=bucket - 59 * size)

    assert (await store.reserve(reservation("old", 90, [at(0)]))).ok
    assert not (await store.reserve(reservation("blocked", 20, [at(59)]))).ok
    assert (await store.reserve(reservation("later", 100, [at(60)]))).ok
    assert await state(store, at(60)) == (0, 100, 100)
    await store.append_ledger([settlement("old", 90)])  # counted in minute 0's bucket
    assert await state(store, at(60)) == (0, 100, 100)
    # minute 0's window holds the 90 it settled, and counts minute 60's newer hold too (a
    # reserve whose clock lags must see what newer requests hold)
    assert await state(store, at(0)) == (90, 100, 100)


async def test_rollover_adds_unused_previous_window_up_to_cap(store: Any) -> None:
    prev, cur = T0 - DAY, T0

    def current(cap: int) -> Hold:
        return hold(
            "tenant:acme:day", 100, cur, rollover_cap=cap, rollover_bucket=prev, base_limit=100
        )

    # nothing used yesterday: the full cap rolls over
    assert (await state(store, current(50)))[2] == 150
    assert (await state(store, current(0)))[2] == 100  # no cap, no rollover
    yesterday = hold("tenant:acme:day", 100, prev)
    assert (await store.reserve(reservation("y", 70, [yesterday]))).ok
    await store.append_ledger([settlement("y", 70)])
    assert (await state(store, current(50)))[2] == 130  # 30 unused < cap
    assert (await state(store, current(20)))[2] == 120  # capped
    # yesterday's spend does not count as today's
    assert (await state(store, current(50)))[0] == 0
    # a reservation in flight yesterday does not reduce the rollover (only spend does)
    assert (await store.reserve(reservation("y2", 20, [yesterday]))).ok
    assert (await state(store, current(50)))[2] == 130
    # the rolled-over limit is what reserve enforces
    assert (await store.reserve(reservation("t1", 130, [current(50)]))).ok
    assert not (await store.reserve(reservation("t2", 1, [current(50)]))).ok


async def test_rollover_never_negative_when_previous_overspent(store: Any) -> None:
    prev = T0 - DAY
    yesterday = hold("tenant:acme:day", 200, prev)
    assert (await store.reserve(reservation("y", 150, [yesterday]))).ok
    await store.append_ledger([settlement("y", 150)])
    today = hold("tenant:acme:day", 100, T0, rollover_cap=50, rollover_bucket=prev, base_limit=100)
    assert await state(store, today) == (0, 0, 100)


async def test_holds_from_specs_with_rollover_through_the_store(store: Any) -> None:
    zone = ZoneInfo("America/New_York")
    specs = [BudgetSpec("tenant", parse_period("day"), 1_000, rollover_cap=400)]
    day1 = 1_767_286_800.0  # 2026-01-01T12:00:00-05:00
    (h1,) = holds(specs, tenant="acme", key="k1", feature=None, user=None, now=day1, zone=zone)
    assert (await store.reserve(reservation("d1", 900, [h1]))).ok
    await store.append_ledger([settlement("d1", 800)])
    (h2,) = holds(
        specs, tenant="acme", key="k1", feature=None, user=None, now=day1 + DAY, zone=zone
    )
    assert h2.rollover_bucket == h1.bucket
    assert await state(store, h2) == (0, 0, 1_200)  # 200 unused yesterday carried over


# --- alerts ------------------------------------------------------------------------------


async def test_record_alert_once_per_counter_window_threshold(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    assert await store.record_alert(a, 80, "acme", T0 + 1, {"used": 81}) is True
    assert await store.record_alert(a, 80, "acme", T0 + 2, {"used": 90}) is False
    assert await store.record_alert(a, 100, "acme", T0 + 3, {"used": 100}) is True
    tomorrow = hold("tenant:acme:day", 100, T0 + DAY)
    assert await store.record_alert(tomorrow, 80, "acme", T0 + DAY, {}) is True
    assert await store.record_alert(hold("tenant:globex:day", 50), 80, "globex", T0 + 4, {})
    assert await store.record_alert(hold("global:day", 10), 80, None, T0 + 5, {"x": 1})
    acme = await store.alerts("acme")
    assert [(r["budget"], r["window_start"], r["threshold_percent"]) for r in acme] == [
        ("tenant:acme:day", T0, 80),
        ("tenant:acme:day", T0, 100),
        ("tenant:acme:day", T0 + DAY, 80),
    ]
    assert acme[0]["used"] == 81 and acme[0]["tenant"] == "acme" and acme[0]["fired_at"] == T0 + 1
    globex = await store.alerts("globex")
    assert [(r["budget"], r["tenant"]) for r in globex] == [("tenant:globex:day", "globex")]
    assert len(await store.alerts(None)) == 5
    assert await store.alerts("nobody") == []


# --- several processes on one SQLite file ------------------------------------------------


RACE_PROCS = 4


RACE_TRIES = 5


RACE_AMOUNT = 1_000_003


RACE_WINNERS = 7  # the limit allows exactly this many reservations


RACE_HOLD = hold("tenant:race:day", RACE_AMOUNT * RACE_WINNERS + RACE_AMOUNT - 1)


def _race_worker(path: str, worker: int, barrier: Any, results: Any) -> None:
    async def main() -> list[bool]:
        store = SQLiteStore(Path(path))
        await store.open()
        try:
            barrier.wait(timeout=60)
            won = []
            for i in range(RACE_TRIES):
                rid = f"w{worker}-{i}"
                outcome = await store.reserve(reservation(rid, RACE_AMOUNT, [RACE_HOLD]))
                won.append(outcome.ok)
                if outcome.ok:
                    await store.append_ledger([settlement(rid, RACE_AMOUNT)])
            return won
        finally:
            await store.close()

    results.put((worker, asyncio.run(main())))


def test_sqlite_processes_race_for_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    outcomes = race_on_sqlite(path, _race_worker, RACE_PROCS)
    wins = sum(sum(w) for w in outcomes.values())
    assert wins == RACE_WINNERS

    async def check() -> tuple[tuple[int, int, int], list[LedgerEntry]]:
        s = SQLiteStore(path)
        await s.open()
        try:
            return await state(s, RACE_HOLD), await s.ledger()
        finally:
            await s.close()

    (used, reserved, limit), rows = asyncio.run(check())
    assert used <= limit
    assert used == RACE_WINNERS * RACE_AMOUNT
    assert reserved == 0
    assert len(rows) == RACE_WINNERS and sum(e.cost for e in rows) == used
