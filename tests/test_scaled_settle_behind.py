"""Issue 9, the ledger in PostgreSQL: the Redis settle after the commit runs behind the
request (``ScaledStore(settle_behind=True)``, what ``farebox serve`` uses).

``append_ledger`` returns once the ledger commits; a background ``Settler`` settles what has
queued up, many requests in one call. Reads of the counters (``budget_states``: the admin
endpoints, ``/v1/me``) wait for the settles queued before them, so a client sees its spend
right after its answer; closing the store settles what is queued, so a clean shutdown
leaves no reservation held. The ``Settler`` alone is tested without Redis at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from farebox.core.records import LedgerEntry
from farebox.stores.settler import Settler
from tests.contracts.builders import T0, hold, reservation, settlement, state

DSN = os.environ.get("FAREBOX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
N = 30


def _make(schema: str, prefix: str, *, behind: bool = True) -> Any:
    import redis.asyncio as aioredis

    from farebox.stores.postgres.store import PostgresStore
    from farebox.stores.redis.budgets import RedisBudgets
    from farebox.stores.scaled import ScaledStore

    client = aioredis.Redis(host="127.0.0.1", port=6379)
    pg = PostgresStore(DSN, schema=schema, pool_min=1, pool_max=4)
    return ScaledStore(pg, RedisBudgets(client, prefix=prefix), client, settle_behind=behind)


@pytest.fixture
async def names() -> AsyncIterator[tuple[str, str]]:
    """A fresh schema and Redis key prefix; both removed afterwards (after every store that
    used them is closed, so no settle lands behind the cleanup)."""
    from tests.contracts.backends import drop_schema, require

    require("scaled store", ("PostgreSQL", 5432), ("Redis", 6379))
    import redis.asyncio as aioredis

    tag = uuid.uuid4().hex[:12]
    schema, prefix = f"farebox_settle_{tag}", f"fbxsettle{tag}"
    try:
        yield schema, prefix
    finally:
        await drop_schema(schema)
        client = aioredis.Redis(host="127.0.0.1", port=6379)
        try:
            async for k in client.scan_iter(match=f"{{{prefix}}}*"):
                await client.delete(k)
        finally:
            await client.aclose()


@pytest.fixture
async def store(names: tuple[str, str]) -> AsyncIterator[Any]:
    s = _make(*names)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class Gate:
    """Wraps a store's ``settle``: counts calls, and holds them until opened."""

    def __init__(self, store: Any) -> None:
        self.calls: list[list[str]] = []
        self.opened = asyncio.Event()
        self.waiting = asyncio.Event()
        self._settle = store._budgets.settle

    async def __call__(self, entries: Sequence[LedgerEntry]) -> None:
        self.calls.append([e.request_id for e in entries])
        self.waiting.set()
        await self.opened.wait()
        await self._settle(entries)


async def test_the_answer_does_not_wait_for_the_settle_and_a_read_sees_it(store: Any) -> None:
    h = hold("tenant:acme:day", 10_000)
    assert (await store.reserve(reservation("r1", 400, [h]))).ok
    gate = Gate(store)
    store._budgets.settle = gate
    await store.append_ledger([settlement("r1", 123)])  # returns with the settle held back
    await gate.waiting.wait()
    assert [e.request_id for e in await store.ledger()] == ["req-r1"]
    read = asyncio.create_task(state(store, h))
    await asyncio.sleep(0)  # one loop turn: the read is now waiting for the settle
    assert not read.done()
    gate.opened.set()
    assert await read == (123, 0, 10_000)  # read-after-write: the settled spend


async def test_concurrent_requests_settle_in_fewer_calls_and_exactly(store: Any) -> None:
    h = hold("tenant:acme:day", 10**9)
    for i in range(N):
        assert (await store.reserve(reservation(f"r{i}", 1_000, [h]))).ok
    gate = Gate(store)
    store._budgets.settle = gate
    await store.append_ledger([settlement("r0", 5)])
    await gate.waiting.wait()  # the first settle is under way; the rest queue behind it
    await asyncio.gather(*(store.append_ledger([settlement(f"r{i}", 5)]) for i in range(1, N)))
    gate.opened.set()
    assert await state(store, h) == (5 * N, 0, 10**9)
    assert len(gate.calls) < N, gate.calls
    assert sorted(r for call in gate.calls for r in call) == sorted(f"req-r{i}" for i in range(N))
    assert await store.reclaim_expired(T0 + 10**6) == []  # nothing left held


async def test_close_settles_what_is_queued(names: tuple[str, str]) -> None:
    h = hold("tenant:acme:day", 10**9)
    store = _make(*names)
    await store.open()
    try:
        for i in range(N):
            assert (await store.reserve(reservation(f"r{i}", 1_000, [h]))).ok
        await asyncio.gather(*(store.append_ledger([settlement(f"r{i}", 7)]) for i in range(N)))
    finally:
        await store.close()  # at once: the settles may all still be queued
    reader = _make(*names, behind=False)
    await reader.open()
    try:
        assert await state(reader, h) == (7 * N, 0, 10**9)  # no reservation left held
    finally:
        await reader.close()


async def test_a_failed_settle_behind_is_left_to_reclaim(store: Any) -> None:
    from redis.exceptions import ResponseError

    h = hold("tenant:acme:day", 1_000)
    assert (await store.reserve(reservation("r1", 400, [h], expires_at=T0 + 5))).ok

    async def readonly(entries: Any) -> None:
        raise ResponseError("READONLY You can't write against a read only replica.")

    settle = store._budgets.settle
    store._budgets.settle = readonly
    await store.append_ledger([settlement("r1", 123)])  # committed: no error
    assert await state(store, h) == (0, 400, 1_000)  # tried, failed, still held
    store._budgets.settle = settle
    assert await store.reclaim_expired(T0 + 10) == []
    assert await state(store, h) == (123, 0, 1_000)


async def test_one_entry_refused_does_not_leave_its_batch_unsettled(store: Any) -> None:
    from redis.exceptions import ResponseError

    h = hold("tenant:acme:day", 10**6)
    for i in range(5):
        assert (await store.reserve(reservation(f"r{i}", 100, [h]))).ok
    gate = Gate(store)
    real = store._budgets.settle

    async def picky(entries: Sequence[LedgerEntry]) -> None:
        if any(e.reservation_id == "r2" for e in entries):
            raise ResponseError("FAREBOX_OVERFLOW counter of tenant:acme:day")
        await real(entries)

    gate._settle = picky
    store._budgets.settle = gate
    await store.append_ledger([settlement("r0", 1)])
    await gate.waiting.wait()
    await asyncio.gather(*(store.append_ledger([settlement(f"r{i}", 1)]) for i in range(1, 5)))
    gate.opened.set()
    assert await state(store, h) == (4, 100, 10**6)  # all but r2 settled; r2 still held
    batch = ["req-r1", "req-r2", "req-r3", "req-r4"]
    assert sorted(gate.calls[1]) == batch  # tried as one batch first (in commit order)
    assert sorted(gate.calls[2:]) == [[r] for r in batch]  # then entry by entry


async def test_reserves_do_not_wait_for_queued_settles(store: Any) -> None:
    h = hold("tenant:acme:day", 1_000)
    assert (await store.reserve(reservation("r1", 600, [h]))).ok
    gate = Gate(store)
    store._budgets.settle = gate
    await store.append_ledger([settlement("r1", 100)])
    await gate.waiting.wait()
    # the hold is still counted at 600 while its settle waits: stricter, never looser
    refused = await store.reserve(reservation("r2", 500, [h]))
    assert not refused.ok
    gate.opened.set()
    assert await state(store, h) == (100, 0, 1_000)
    assert (await store.reserve(reservation("r3", 500, [h]))).ok


async def test_a_finished_requests_slot_never_refuses_the_next_one(store: Any) -> None:
    """A key allowed one request in flight: the next request, sent as soon as the answer
    came, is admitted even while the first one's settle (which frees the slot) is queued: a
    refused reserve waits for the queued settles and is tried once more."""
    from farebox.core.records import Reservation
    from farebox.gateway.rate_limits import LimitSpec, holds

    spec = LimitSpec("key", requests=100, tokens=10**6, concurrent=1, model=None, window_s=60)
    slot = [h for h in holds([spec], tenant="acme", key="k1", user=None, ip=None, model="m",
                             now=T0) if h.unit == "concurrent"]  # fmt: skip

    def one(rid: str) -> Reservation:
        return Reservation(rid, 0, tuple(slot), T0 + 60, reservation(rid, 0, []).unsettled, 1)

    assert (await store.reserve(one("a"))).ok
    assert not (await store.reserve(one("b"))).ok  # "a" is in flight: full (nothing queued)
    gate = Gate(store)
    store._budgets.settle = gate
    await store.append_ledger([settlement("a", 0)])  # answered; its settle is held back
    await gate.waiting.wait()
    second = asyncio.create_task(store.reserve(one("c")))
    await asyncio.sleep(0)  # one loop turn: the reserve is under way
    assert not second.done()
    gate.opened.set()  # whenever the settle lands, before or after the first try, "c" gets in
    assert (await second).ok
    assert await state(store, slot[0]) == (0, 1, 1)  # "c" in flight, "a" gone


# --- the Settler alone ---------------------------------------------------------------------


class Fake:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[int] = []
        self.fail = fail

    async def __call__(self, entries: Sequence[LedgerEntry]) -> None:
        self.calls.append(len(entries))
        await asyncio.sleep(0)  # a yield: others may queue meanwhile
        if self.fail is not None:
            raise self.fail


def _settled(count: int) -> list[LedgerEntry]:
    return [settlement(f"x{i}", 1) for i in range(count)]


async def test_settler_refuses_when_stopped_or_full() -> None:
    fake = Fake()
    settler = Settler(fake, (ConnectionError,), max_pending=3)
    assert not settler.submit(_settled(1))  # not started: the caller settles itself
    settler.start()
    assert settler.submit(_settled(3))
    assert not settler.submit(_settled(1))  # full
    await settler.flush()
    assert settler.submit(_settled(1))
    await settler.stop()
    assert not settler.submit(_settled(1))
    assert sum(fake.calls) == 4


async def test_settler_stop_gives_up_on_an_unreachable_redis_at_once() -> None:
    fake = Fake(ConnectionError("refused"))
    settler = Settler(fake, (ConnectionError,), batch_max=2)
    settler.start()
    for _ in range(5):
        assert settler.submit(_settled(2))
    await settler.stop()  # one failed call, not one per batch
    assert fake.calls == [2]
    await settler.flush()  # nothing left to wait for


async def test_a_flush_waits_only_for_what_was_queued_before_it() -> None:
    gate = asyncio.Event()

    async def slow(entries: Sequence[LedgerEntry]) -> None:
        await gate.wait()

    settler = Settler(slow, (ConnectionError,))
    settler.start()
    settler.submit(_settled(1))
    first = asyncio.create_task(settler.flush())
    await asyncio.sleep(0)  # one loop turn: the flush is waiting
    assert not first.done()
    gate.set()
    await first
    await settler.flush()  # nothing queued since: returns at once
    await settler.stop()
