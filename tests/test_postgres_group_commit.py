"""Issue 9, the ledger in PostgreSQL: group commit through the ledger writer, one statement
(one commit) per batch, no reset round trip when a connection goes back to the pool.

The gateway's ``LedgerWriter`` gathers the entries of concurrent requests into one
``append_ledger`` call while the previous batch commits; ``PostgresStore`` writes that call
as one statement. These tests run both against a real PostgreSQL (a fresh schema each), and
check the writer's promises there: fewer transactions than requests, every entry exactly
once, a batch the database cannot take fails every caller in it the same way, a cancelled
waiter changes nothing for the others, and stopping drains the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from farebox.core.records import LedgerEntry
from farebox.errors import LedgerUnavailable
from farebox.gateway.ledger import LedgerWriter
from tests.contracts.builders import entry

asyncpg = pytest.importorskip("asyncpg")

from farebox.stores.postgres.store import PostgresStore  # noqa: E402
from farebox.stores.timeouts import StoreTimeouts  # noqa: E402
from tests.tcp_proxy import LoopThread, proxy_to  # noqa: E402

DSN = os.environ.get("FAREBOX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PG = ("127.0.0.1", 5432)
N = 40


async def _admin() -> Any:
    try:
        return await asyncpg.connect(DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at 127.0.0.1:5432 is not running: {exc!r}"
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


class CountingStore(PostgresStore):
    """Counts ``append_ledger`` calls: each is one statement, so one transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        self.batches.append(len(entries))
        await super().append_ledger(entries)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"farebox_gc_{uuid.uuid4().hex[:12]}"
    conn = await _admin()
    try:
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


@pytest.fixture
async def store(schema: str) -> AsyncIterator[CountingStore]:
    s = CountingStore(DSN, schema=schema, pool_min=1, pool_max=4)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _rows(schema: str, table: str) -> list[str]:
    conn = await _admin()
    try:
        return [r[0] for r in await conn.fetch(f'SELECT request_id FROM "{schema}".{table}')]
    finally:
        await conn.close()


def _entries(prefix: str, count: int = N) -> list[LedgerEntry]:
    return [entry(f"{prefix}{i}", cost=i + 1) for i in range(count)]


# --- group commit through the writer ------------------------------------------------------


async def test_concurrent_appends_share_transactions_and_land_exactly_once(
    store: CountingStore, schema: str
) -> None:
    writer = LedgerWriter(store)
    writer.start()
    try:
        await asyncio.gather(*(writer.append(e) for e in _entries("r")))
    finally:
        await writer.stop()
    assert sum(store.batches) == N
    assert len(store.batches) < N, store.batches  # grouped: fewer commits than requests
    assert sorted(await _rows(schema, "ledger")) == sorted(f"r{i}" for i in range(N))
    assert sorted(await _rows(schema, "outbox")) == sorted(f"r{i}" for i in range(N))
    costs = {e.request_id: e.cost for e in await store.ledger()}
    assert costs == {f"r{i}": i + 1 for i in range(N)}


async def test_a_cancelled_waiter_loses_and_duplicates_nothing(
    store: CountingStore, schema: str
) -> None:
    writer = LedgerWriter(store)
    writer.start()
    try:
        tasks = [asyncio.create_task(writer.append(e)) for e in _entries("c")]
        await asyncio.sleep(0)  # every task has queued its entry (one step each)
        tasks[7].cancel()
        tasks[23].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await writer.stop()
    cancelled = [i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)]
    assert cancelled == [7, 23]
    assert all(r is None for i, r in enumerate(results) if i not in cancelled)
    # the cancelled requests' entries are written behind them, like everyone else's, once
    assert sorted(await _rows(schema, "ledger")) == sorted(f"c{i}" for i in range(N))
    assert sorted(await _rows(schema, "outbox")) == sorted(f"c{i}" for i in range(N))


async def test_stop_drains_what_is_queued(store: CountingStore, schema: str) -> None:
    writer = LedgerWriter(store)
    writer.start()
    futures = [writer.submit(e) for e in _entries("d")]
    await writer.stop()  # before anything had a chance to run
    assert all(f.done() and f.exception() is None for f in futures)
    assert sorted(await _rows(schema, "ledger")) == sorted(f"d{i}" for i in range(N))


async def test_a_bad_entry_fails_only_its_own_request(
    store: CountingStore, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch PostgreSQL refuses for one row's sake is written again entry by entry, as
    before: the bad entry's request fails, the others of its batch are committed."""
    monkeypatch.setattr("farebox.gateway.ledger.RETRY_DELAY_S", 0.0)
    writer = LedgerWriter(store)
    good = _entries("g", 10)
    bad = dataclasses.replace(entry("bad"), http_status=2**40)  # no INTEGER holds it
    futures = [writer.submit(e) for e in good[:5]] + [writer.submit(bad)]
    futures += [writer.submit(e) for e in good[5:]]
    writer.start()
    results = await asyncio.gather(*futures, return_exceptions=True)
    await writer.stop()
    assert store.batches[0] == 11  # tried as one commit first
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and results[5] is failed[0]
    assert not isinstance(failed[0], LedgerUnavailable)  # the database is fine
    assert sorted(await _rows(schema, "ledger")) == sorted(e.request_id for e in good)


async def test_a_batch_the_database_cannot_take_fails_every_caller_alike(schema: str) -> None:
    """PostgreSQL unreachable while a batch is written: every request of the batch gets the
    same 503 ``ledger_unavailable`` (its charge cannot be confirmed); none is written."""
    loop = LoopThread()
    try:
        with proxy_to(loop, PG) as proxy:
            timeouts = StoreTimeouts(postgres_connect_s=1.0, postgres_command_s=1.0)
            dsn = DSN.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            store = CountingStore(dsn, schema=schema, pool_min=1, pool_max=2, timeouts=timeouts)
            await store.open()
            writer = LedgerWriter(store)
            try:
                await asyncio.to_thread(proxy.cut)
                futures = [writer.submit(e) for e in _entries("u", 12)]
                writer.start()
                results = await asyncio.gather(*futures, return_exceptions=True)
            finally:
                await writer.stop()
                await store.close()
    finally:
        loop.close()
    assert store.batches[0] == 12
    assert all(isinstance(r, LedgerUnavailable) for r in results), results
    assert len({id(r) for r in results}) == 1  # one error for the batch, as before
    assert await _rows(schema, "ledger") == []


# --- one statement, no reset ------------------------------------------------------------


async def test_a_batch_is_one_statement_and_release_sends_nothing(schema: str) -> None:
    """On the one pooled connection, writing a batch runs exactly one statement: no BEGIN,
    no COMMIT, and no reset query (``RESET ALL``, ``UNLISTEN *``...) when it is released.
    (The first write on a connection also has asyncpg look up the ``jsonb[]`` type once.)"""
    store = PostgresStore(DSN, schema=schema, pool_min=1, pool_max=1)
    await store.open()
    sent: list[str] = []
    try:
        await store.append_ledger([entry("warm-up")])
        async with store._pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
        await store.append_ledger(_entries("s", 5))
        await store.append_ledger(_entries("s", 8))  # a retry: writes only the new three
        await store.ledger()
    finally:
        await store.close()
    assert len(sent) == 3, sent
    assert sent[0].startswith("WITH given AS") and sent[1] == sent[0]
    assert sent[2].startswith("SELECT")
    assert sorted(await _rows(schema, "outbox")) == sorted(
        ["warm-up"] + [f"s{i}" for i in range(8)]
    )


async def test_repeats_in_one_batch_fold_to_what_one_by_one_would_leave(
    store: CountingStore, schema: str
) -> None:
    placeholder = entry("p", status="unsettled", cost=0)
    await store.append_ledger(
        [
            entry("a", cost=1), entry("a", cost=2),  # the first real entry stays
            placeholder, entry("p", cost=7), entry("p", cost=8),  # replaced once, then kept
            entry("u", status="unsettled", cost=0), entry("u", status="unsettled", cost=3),
        ]
    )  # fmt: skip
    costs = {e.request_id: (e.status, e.cost) for e in await store.ledger()}
    assert costs == {"a": ("ok", 1), "p": ("ok", 7), "u": ("unsettled", 3)}
    assert sorted(await _rows(schema, "outbox")) == ["a", "p"]  # one row per billed entry
    await store.insert_ledger_if_absent([entry("p", status="unsettled"), entry("n", cost=4)])
    costs = {e.request_id: (e.status, e.cost) for e in await store.ledger()}
    assert costs["p"] == ("ok", 7) and costs["n"] == ("ok", 4)


async def test_a_connection_given_back_after_a_session_lock_is_reset_in_full(
    store: CountingStore, schema: str
) -> None:
    """The one session-level lock (the exporter's) is taken on a ``take`` connection; giving
    it back resets it in full, so the lock does not outlive its use in the pool."""
    pool = store._pool
    conn = await pool.take()
    assert await conn.fetchval("SELECT pg_try_advisory_lock(4242)")
    await pool.give(conn)
    other = await _admin()
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(4242)")
    finally:
        await other.close()


# --- the batch as one JSON text, or as arrays when JSON cannot carry it exactly ------------


async def test_a_batch_goes_as_json_and_reads_back_exactly(store: CountingStore) -> None:
    """Every column round-trips through the JSON path: text with quotes, backslashes, control
    characters and non-ASCII, nested metadata, floats to the last bit, 64-bit money and
    tokens, booleans and NULLs."""
    sent: list[str] = []
    async with store._pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
    batch = [
        entry("j1", user='a "quoted" \\ user\n\t', feature="f\u00e9 \U0001f600 \u2028", stream=True,
              metadata={"k": [1, 2.5, None, {"n": "v\\n"}]}, cost=2**63 - 1,
              revenue=-(2**62), input_tokens=2**40, ttft_ms=0.1 + 0.2,
              latency_ms=1 / 3, upstream_ms=2.0**-30, started_at=1796573494.1381657),
        entry("j2", ttft_ms=None, error_code="x", reservation_id="r-2"),
    ]  # fmt: skip
    await store.append_ledger(batch)
    sent = [q for q in sent if q.startswith("WITH given AS")]  # not asyncpg's type lookups
    assert len(sent) == 1 and "jsonb_to_recordset" in sent[0] and "unnest" not in sent[0]
    got = {e.request_id: e for e in await store.ledger()}
    assert got == {e.request_id: e for e in batch}


@pytest.mark.parametrize(
    "odd",
    [
        {"latency_ms": float("nan")},  # JSON has no NaN (orjson would write null)
        {"upstream_ms": float("inf")},
        {"cost": 2**70},  # beyond 64 bits: orjson refuses it, NUMERIC(38) holds it
        {"user": "a\x00b"},  # jsonb refuses U+0000; the arrays path drops it
    ],
)
async def test_a_batch_json_cannot_carry_goes_as_arrays(
    store: CountingStore, odd: dict[str, Any]
) -> None:
    sent: list[str] = []
    async with store._pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
    await store.append_ledger([entry("plain", cost=3), entry("odd", **odd)])
    sent = [q for q in sent if q.startswith("WITH given AS")]  # not asyncpg's type lookups
    assert len(sent) == 1 and "unnest" in sent[0] and "jsonb_to_recordset" not in sent[0]
    got = {e.request_id: e for e in await store.ledger()}
    assert got["plain"] == entry("plain", cost=3)
    key, value = next(iter(odd.items()))
    if isinstance(value, float) and value != value:  # NaN: stored as NaN
        assert getattr(got["odd"], key) != getattr(got["odd"], key)
    else:
        assert getattr(got["odd"], key) == (value.replace("\x00", "") if key == "user" else value)
