"""A reserve whose caller goes away while it is on its way (in a group-commit batch, or
waiting in the thread for another process's write lock) holds nothing once it lands: the
SQLite store undoes it, rather than leaving its counters held (a concurrency slot, a request
of the window, a budget hold) until its lease runs out two minutes later."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from farebox.stores.sqlite.store import SQLiteStore
from tests.contracts.builders import T0, hold
from tests.contracts.test_reservation_role_rate_limits import limits, reserve_for

HOLDS = [hold("tenant:acme:day", 10_000), *limits()[::2]]  # a budget, requests, slots


async def _held(store: SQLiteStore) -> list[tuple[int, int]]:
    return [(s.used, s.reserved) for s in await store.budget_states(HOLDS)]


async def _released(path: Path) -> None:
    """Nothing held, and no lease left for a reclaimer to turn into an ``unsettled`` entry,
    as the store finds it once reopened (``close`` waits for the store's own writes)."""
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await _held(store) == [(0, 0)] * len(HOLDS)
        assert await store.reclaim_expired(T0 + 10 * 86_400) == []
        assert await store.ledger("acme") == []
    finally:
        await store.close()


async def _cancelled_on_its_way(store: SQLiteStore, rid: str, **kw: bool) -> None:
    task = asyncio.ensure_future(store.reserve(reserve_for(rid, 500, 0, HOLDS), **kw))
    await asyncio.sleep(0)  # the reserve is in this turn's batch, not yet written
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_batched_reserve_whose_caller_went_away_holds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "farebox.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await _cancelled_on_its_way(store, "gone", busy=True)
        # a reserve that was not cancelled is kept
        assert (await store.reserve(reserve_for("kept", 500, 0, HOLDS), busy=True)).ok
    finally:
        await store.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await _held(store) == [(0, 500), (0, 1), (0, 1)]  # "kept"'s, not "gone"'s
        reclaimed = await store.reclaim_expired(T0 + 10 * 86_400)
        assert [e.reservation_id for e in reclaimed] == ["kept"]  # "gone" left no lease
        assert await _held(store) == [(0, 0)] * len(HOLDS)
    finally:
        await store.close()


async def test_a_reserve_waiting_for_the_write_lock_whose_caller_went_away(
    tmp_path: Path,
) -> None:
    """Another process holds the write lock: the reserve waits in the thread; its caller is
    cancelled; the reserve lands once the lock is free, and is undone."""
    path = tmp_path / "farebox.db"
    store = SQLiteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        await _cancelled_on_its_way(store, "gone")
        other.execute("COMMIT")
    finally:
        other.close()
        await store.close()
    await _released(path)
