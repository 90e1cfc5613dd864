"""The ``ReservationStore`` contract for ledger-free reservations (a token count), on every
backend that keeps counters (memory, SQLite, single-process SQLite, PostgreSQL plus Redis, and
on a Redis Cluster): it holds a request and a slot in flight like any reservation, shares the
counters with the requests that write ledger entries, and ``settle_counters`` settles it to
one request and nothing in flight without a ledger row; a lease that expires releases it and
records nothing."""

from __future__ import annotations

from typing import Any

from farebox.core.budgets import Hold
from farebox.core.records import LEDGER_FREE, Reservation
from tests.contracts.backends import ALL_IN_ONE
from tests.contracts.builders import T0, entry, settlement, state
from tests.contracts.test_reservation_role_rate_limits import limits, reserve_for

BACKENDS = ALL_IN_ONE


def count(rid: str, on: list[Hold], expires_at: float = T0 + 60) -> Reservation:
    """A token count's reservation: rate-limit counters only, a ``LEDGER_FREE`` placeholder."""
    placeholder = entry(f"req-{rid}", status=LEDGER_FREE, http_status=0, reservation_id=rid)
    return Reservation(rid, 0, tuple(on), expires_at, placeholder)


def counted(on: list[Hold]) -> list[Hold]:
    """The counters a count takes: requests and the slot in flight, not tokens."""
    return [h for h in on if h.unit in ("requests", "concurrent")]


async def test_a_count_takes_a_request_and_frees_its_slot_without_a_ledger_row(
    store: Any,
) -> None:
    requests, slots = counted(limits())
    outcome = await store.reserve(count("c1", [requests, slots]))
    assert outcome.ok
    assert [(s.used, s.reserved) for s in outcome.states] == [(0, 1), (0, 1)]
    await store.settle_counters(count("c1", [requests, slots]))
    assert await state(store, requests) == (1, 0, 3)
    assert await state(store, slots) == (0, 0, 2)
    await store.settle_counters(count("c1", [requests, slots]))  # idempotent
    assert await state(store, requests) == (1, 0, 3)
    assert await store.ledger() == []
    assert await store.reclaim_expired(T0 + 3600) == []


async def test_counts_and_requests_share_the_request_window(store: Any) -> None:
    requests, tokens, slots = limits()
    for rid in ("c1", "c2"):
        assert (await store.reserve(count(rid, [requests, slots]))).ok
        await store.settle_counters(count(rid, [requests, slots]))
    assert (await store.reserve(reserve_for("r1", 0, 10, [requests, tokens, slots]))).ok
    await store.append_ledger([settlement("r1", 0, input_tokens=4)])
    refused = await store.reserve(count("c3", [requests, slots]))
    assert not refused.ok and refused.failed is not None
    assert refused.failed.hold.unit == "requests"
    assert await state(store, requests) == (3, 0, 3)
    assert await state(store, tokens) == (4, 0, 1000)  # the request's tokens; counts add none
    assert [e.request_id for e in await store.ledger()] == ["req-r1"]


async def test_a_count_in_flight_holds_a_slot(store: Any) -> None:
    requests, slots = counted(limits())
    for rid in ("c1", "c2"):
        assert (await store.reserve(count(rid, [requests, slots]))).ok
    refused = await store.reserve(reserve_for("r1", 0, 0, [requests, slots]))
    assert not refused.ok and refused.failed is not None
    assert refused.failed.hold.unit == "concurrent"
    await store.settle_counters(count("c1", [requests, slots]))
    assert (await store.reserve(reserve_for("r1", 0, 0, [requests, slots]))).ok


async def test_an_expired_count_is_released_and_recorded_nowhere(store: Any) -> None:
    requests, slots = counted(limits())
    assert (await store.reserve(count("c1", [requests, slots], expires_at=T0 + 5))).ok
    ordinary = reserve_for("r1", 0, 0, [requests, slots], expires_at=T0 + 5)
    assert (await store.reserve(ordinary)).ok
    reclaimed = await store.reclaim_expired(T0 + 10)
    assert [e.reservation_id for e in reclaimed] == ["r1"]  # the request's placeholder only
    assert [e.request_id for e in await store.ledger()] == ["req-r1"]
    assert await state(store, slots) == (0, 0, 2)
    assert await state(store, requests) == (0, 0, 3)
    await store.settle_counters(count("c1", [requests, slots]))  # late: counted, no row
    assert await state(store, requests) == (1, 0, 3)
    assert await state(store, slots) == (0, 0, 2)
    assert [e.request_id for e in await store.ledger()] == ["req-r1"]
