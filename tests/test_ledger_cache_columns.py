"""Issue [12]: a ledger entry's ``cache`` (hit-exact | hit-semantic | miss | bypass | None)
and ``saved`` (pico-USD) round-trip on every backend, through every path that writes or reads
an entry: a batch, the request log, the exporter's outbox, reads by request id, a lease's
placeholder (reservations keep the entry as JSON) and the single-process store's journal after
a crash. Rows written before the columns existed read back with ``cache`` None and ``saved``
0, and the rollup migration that adds the cache's sums backfills them from the ledger."""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from farebox.core.cache import BYPASS, HIT_EXACT, HIT_SEMANTIC, HIT_STATUS, MISS, tally_entries
from farebox.core.records import LedgerEntry, RequestQuery, SeriesQuery
from farebox.stores.postgres import schema as pg_schema
from farebox.stores.sqlite import schema as sqlite_schema
from tests.contracts.backends import PG_DSN, drop_schema, opened, require
from tests.contracts.builders import DAY, T0, entry, hold, reservation

BIG = 2**62 + 12_345
ROUND_TRIP = ("memory", "sqlite", "sqlite-single-process", "postgres", "postgres+redis")


def cached() -> list[LedgerEntry]:
    return [
        entry("hit", status=HIT_STATUS, cache=HIT_EXACT, saved=BIG, cost=0, revenue=5),
        # the largest saving SQLite holds, alone in its rollup rows (a day and hour of its own)
        entry("sem", status=HIT_STATUS, cache=HIT_SEMANTIC, saved=2**63 - 1, started_at=T0 - DAY),
        entry("miss", cache=MISS, cost=40, started_at=T0 + 2),
        entry("pass", cache=BYPASS, cost=41, started_at=T0 + 3),
        entry("none", cost=42, started_at=T0 + 4),
    ]


def cache_of(entries: Any) -> dict[str, tuple[str | None, int]]:
    return {e.request_id: (e.cache, e.saved) for e in entries}


WANT = {
    "hit": (HIT_EXACT, BIG),
    "sem": (HIT_SEMANTIC, 2**63 - 1),
    "miss": (MISS, 0),
    "pass": (BYPASS, 0),
    "none": (None, 0),
}


@pytest.mark.parametrize("backend", ROUND_TRIP)
async def test_cache_and_saved_round_trip_on_every_read(backend: str, tmp_path: Path) -> None:
    async with opened(backend, tmp_path) as store:
        await store.append_ledger(cached())
        assert cache_of(await store.ledger()) == WANT
        page = await store.requests(RequestQuery(limit=10))
        assert cache_of(page.entries) == WANT
        assert cache_of((await store.entries_by_id(list(WANT))).values()) == WANT
        exported = [e for _, e in await store.ledger_since(0, 100)]
        assert cache_of(exported) == WANT
        only_misses = await store.requests(RequestQuery(cache=MISS))
        assert [e.request_id for e in only_misses.entries] == ["miss"]
        assert type((await store.ledger())[0].saved) is int


@pytest.mark.parametrize("backend", [b for b in ROUND_TRIP if b != "postgres"])  # no leases
async def test_a_leases_placeholder_keeps_its_cache_fields(backend: str, tmp_path: Path) -> None:
    async with opened(backend, tmp_path) as store:
        res = reservation("r1", 10, [hold("t:acme", 10**12)], expires_at=T0 + 30)
        res.unsettled.cache, res.unsettled.saved = MISS, 17
        assert (await store.reserve(res)).ok
        (lost,) = await store.reclaim_expired(T0 + 31)
        assert (lost.cache, lost.saved) == (MISS, 17)
        assert cache_of(await store.ledger()) == {"req-r1": (MISS, 17)}


async def test_the_single_process_journal_keeps_cache_fields_through_a_crash(
    tmp_path: Path,
) -> None:
    from farebox.stores.sqlite.single import SingleProcessSQLiteStore

    path = tmp_path / "single.db"
    store = SingleProcessSQLiteStore(path)
    await store.open()
    res = reservation("r1", 10, [hold("t:acme", 10**12)], expires_at=T0 + 30)
    res.unsettled.cache, res.unsettled.saved = HIT_SEMANTIC, BIG
    assert (await store.reserve(res)).ok
    await store.close()  # never settled: as if the process died with the request in flight
    again = SingleProcessSQLiteStore(path)
    await again.open()  # recovers the journal's reservation as an unsettled entry
    try:
        assert cache_of(await again.ledger()) == {"req-r1": (HIT_SEMANTIC, BIG)}
    finally:
        await again.close()


# --- rows written before the columns, and the rollups' migration ------------------------

# how many migrations come before the one that adds cache and saved to the ledger (the last
# but one: the last adds the cache's sums to the rollups)
SQLITE_BEFORE = len(sqlite_schema.MIGRATIONS) - 2
PG_BEFORE = len(pg_schema.MIGRATIONS) - 2
OLD_COLS = ("request_id", "tenant_id", "key_id", "endpoint", "model_requested", "model_served",
            "provider", "status", "http_status", "started_at", "finished_at", "cost")  # fmt: skip
OLD_ROW = ("old", "acme", "k1", "chat.completions", "m", "m", "mock", "ok", 200, T0 + 5,
           T0 + 6, 9)  # fmt: skip


def later_entries() -> list[LedgerEntry]:
    """Entries written once the ledger has the columns but before the rollups keep them."""
    return [
        *cached(),
        entry("hit2", status=HIT_STATUS, cache=HIT_EXACT, saved=BIG + 1, started_at=T0 + DAY),
        entry("miss2", tenant_id="b", cache=MISS, started_at=T0 + DAY + 7),
    ]


async def check_migrated(store: Any) -> None:
    entries = await store.ledger()
    assert cache_of(e for e in entries if e.request_id == "old") == {"old": (None, 0)}
    for start, end in ((None, None), (T0 - DAY, T0 + 2 * DAY), (T0 + 3600, T0 + DAY + 3600)):
        for tenant in (None, "acme", "b"):
            want = tally_entries(entries, tenant, start, end)
            assert await store.cache_tallies(tenant, start, end) == want
    whole = SeriesQuery(T0 - DAY, T0 + 2 * DAY, bucket="all")
    (point,) = await store.series(whole)
    assert (point.requests, point.saved, point.cache_misses) == (8, 2 * BIG + 2**63, 2)
    # and the triggers keep the new sums from here on
    await store.append_ledger([entry("new", cache=MISS, started_at=T0 + 9)])
    (point,) = await store.series(whole)
    assert (point.requests, point.cache_misses) == (9, 3)


async def test_sqlite_rows_from_before_read_back_and_the_rollups_backfill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farebox.stores.sqlite.store import SQLiteStore

    path, every, before = tmp_path / "old.db", sqlite_schema.MIGRATIONS, SQLITE_BEFORE
    with closing(sqlite3.connect(path)) as db:  # a database from before the cache
        db.isolation_level = None
        monkeypatch.setattr(sqlite_schema, "MIGRATIONS", every[:before])
        sqlite_schema.migrate(db)
        marks = ",".join("?" * len(OLD_COLS))
        db.execute(f"INSERT INTO ledger({','.join(OLD_COLS)}) VALUES ({marks})", OLD_ROW)
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", every[: before + 1])
    store = SQLiteStore(path)
    await store.open()
    await store.append_ledger(later_entries())
    await store.close()
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", every)
    store = SQLiteStore(path)
    await store.open()
    try:
        await check_migrated(store)
    finally:
        await store.close()


async def test_postgres_rows_from_before_read_back_and_the_rollups_backfill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("PostgreSQL store", ("PostgreSQL", 5432))
    import asyncpg

    from farebox.stores.postgres.store import PostgresStore

    name, every, before = (
        f"farebox_cachecols_{uuid.uuid4().hex[:12]}",
        pg_schema.MIGRATIONS,
        PG_BEFORE,
    )
    conn = await asyncpg.connect(PG_DSN)
    try:
        monkeypatch.setattr(pg_schema, "MIGRATIONS", every[:before])
        await pg_schema.migrate(conn, name)
        marks = ", ".join(f"${i}" for i in range(1, len(OLD_COLS) + 1))
        await conn.execute(
            f'INSERT INTO "{name}".ledger({", ".join(OLD_COLS)}) VALUES ({marks})', *OLD_ROW
        )
    finally:
        await conn.close()
    try:
        monkeypatch.setattr(pg_schema, "MIGRATIONS", every[: before + 1])
        store = PostgresStore(PG_DSN, schema=name, pool_min=1, pool_max=2)
        await store.open()
        await store.append_ledger(later_entries())
        await store.close()
        monkeypatch.setattr(pg_schema, "MIGRATIONS", every)
        store = PostgresStore(PG_DSN, schema=name, pool_min=1, pool_max=2)
        await store.open()
        try:
            await check_migrated(store)
        finally:
            await store.close()
    finally:
        await drop_schema(name)
