"""Issue [13]: a grant that expires or is voided while requests are in flight. The forfeit is
taken from the balance like any spend (held against the counter atomically, then settled),
never by lowering the limit requests reserve against: a void racing a reservation cannot let
the tenant burn what was voided, and a request held across an expiry cannot keep the expired
credits it did not use. On the in-process store and on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from farebox.billing.credits import CreditBook
from farebox.core.records import LedgerEntry, Reservation
from farebox.stores.memory.store import MemoryStore
from farebox.stores.sqlite.store import SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    made: Any = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "f.db")
    await made.open()
    try:
        yield made
    finally:
        await made.close()


def entry(rid: str, status: str = "unsettled", revenue: int = 0) -> LedgerEntry:
    return LedgerEntry(f"req_{rid}", "t", "k", "chat", "m", "m", "p", status, 200, 1.0, 1.0,
                       revenue=revenue, reservation_id=rid)  # fmt: skip


async def hold(book: CreditBook, store: Any, rid: str, revenue: int) -> bool:
    (counter,) = await book.holds("t")
    made = Reservation(rid, 0, (counter,), 4e9, entry(rid), 0, revenue)
    return bool((await store.reserve(made)).ok)


async def settle(store: Any, rid: str, revenue: int) -> None:
    await store.append_ledger([entry(rid, "ok", revenue)])


def invariant(balance: Any) -> None:
    assert balance.burned + balance.reserved + balance.forfeited <= balance.granted
    assert balance.balance >= 0


async def test_a_void_racing_a_reservation_cannot_be_spent(store: Any) -> None:
    book = CreditBook(store.credits, store, store.auth_epoch, lambda: 1000.0)
    await book.grant("t", 100, "top_up", "a", None, "admin")
    await book.grant("t", 50, "refund", "b", None, "admin")
    recording, go_on = asyncio.Event(), asyncio.Event()
    record = store.credits.update_grant

    async def slow(before: Any, after: Any) -> bool:  # the record's write takes a while
        recording.set()
        await go_on.wait()
        return bool(await record(before, after))

    store.credits.update_grant = slow
    void = asyncio.create_task(book.void("t", "b", "stripe"))
    await recording.wait()
    assert not await hold(book, store, "rsv_big", 140)  # the voided 50 is held already
    assert await hold(book, store, "rsv_fits", 100)
    go_on.set()
    voided = await void
    assert voided is not None and voided.forfeited == 50
    await settle(store, "rsv_fits", 100)
    balance = await book.balance("t")
    assert (balance.burned, balance.forfeited, balance.balance) == (100, 50, 0)
    invariant(balance)


async def test_a_request_held_across_an_expiry_keeps_only_what_it_burned(store: Any) -> None:
    now = [1000.0]
    book = CreditBook(store.credits, store, store.auth_epoch, lambda: now[0])
    await book.grant("t", 100, "promo", "promo", 2000.0, "admin")
    await book.grant("t", 30, "top_up", "top", None, "admin")
    assert await hold(book, store, "rsv_long", 100)  # a long stream holds the promo's worth
    now[0] = 2001.0  # the promo expires while it runs
    first = await book.balance("t")
    [promo] = [g for g in first.grants if g.key == "promo"]
    assert promo.pending and promo.forfeited == 0  # the stream may still burn it
    invariant(first)
    await settle(store, "rsv_long", 10)  # it used 10
    now[0] = 2003.0
    final = await book.balance("t")
    [promo] = [g for g in final.grants if g.key == "promo"]
    assert (promo.pending, promo.forfeited) == (False, 90)
    assert (final.burned, final.balance) == (10, 30)  # the top-up is untouched
    invariant(final)
    assert not await hold(book, store, "rsv_after", 31)  # the expired 90 cannot be spent
    assert await hold(book, store, "rsv_ok", 30)


async def test_two_books_recording_one_expiry_forfeit_once(store: Any) -> None:
    now = [1000.0]
    books = [CreditBook(store.credits, store, store.auth_epoch, lambda: now[0]) for _ in "ab"]
    await books[0].grant("t", 100, "promo", "promo", 2000.0, "admin")
    await books[0].grant("t", 40, "top_up", "top", None, "admin")
    assert await hold(books[0], store, "rsv_1", 20)
    await settle(store, "rsv_1", 20)
    now[0] = 2001.0
    seen = await asyncio.gather(*(b.balance("t") for b in books))  # both see it due at once
    final = await books[0].balance("t")
    assert (final.burned, final.forfeited, final.balance) == (20, 80, 40)
    assert all(replace(s, grants=()).balance >= 0 for s in seen)
    invariant(final)
