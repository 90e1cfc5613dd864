"""Hourly rollups on SQLite (``stores/rollup_rows.py`` says what they hold): the table and the
ledger triggers that keep it (a migration), and ``series``, read on a connection and a thread
of its own, so a report never waits behind (nor holds up) the data plane's writes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from farebox.core.cache import MISS, CacheTally
from farebox.core.records import SeriesPoint, SeriesQuery
from farebox.stores.cache_tallies import sqlite_tallies
from farebox.stores.rollup_rows import (
    CACHE_SUMS,
    GRAINS,
    SUMS,
    SUMS_V1,
    Fold,
    Grain,
    RollupUsage,
    check,
    key_of,
    table_of,
)
from farebox.stores.rollup_sql import SQLITE_ROLLUP, Sums, series_statement
from farebox.stores.sqlite.conn import connect

T = TypeVar("T")


def _upsert(row: str, grain: Grain, sums: Sums) -> str:
    table, key = table_of(grain), key_of(grain)
    cols = ", ".join(key + sums)
    values = ", ".join(x for _, x in SQLITE_ROLLUP.projection(row, grain=grain, sums=sums))
    tail = SQLITE_ROLLUP.upsert_tail(table, grain, sums)
    return f"INSERT INTO {table}({cols}) VALUES ({values}) {tail};"


def _remove(row: str, grain: Grain, sums: Sums) -> str:
    """Subtract the ``row`` ledger row (``OLD.``) from its rollup row (which exists: the
    row was added when it was inserted)."""
    proj = SQLITE_ROLLUP.projection(row, grain=grain, sums=sums)
    n = len(key_of(grain))
    keys = " AND ".join(f"{c} = {x}" for c, x in proj[:n])
    subs = ", ".join(f"{c} = {c} - ({x})" for c, x in proj[n:])
    return f"UPDATE {table_of(grain)} SET {subs} WHERE {keys};"


def _table(grain: Grain, sums: Sums) -> str:
    key = key_of(grain)
    keys = ", ".join(f"{c} {'INTEGER' if c in ('hour', 'shard') else 'TEXT'} NOT NULL" for c in key)
    cols = ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in sums)
    return (f"CREATE TABLE {table_of(grain)} ({keys}, {cols}, PRIMARY KEY ({', '.join(key)})) "
            "WITHOUT ROWID;")  # fmt: skip


def _triggers(sums: Sums) -> str:
    add = "".join(_upsert("NEW.", g, sums) for g in GRAINS)
    remove = "".join(_remove("OLD.", g, sums) for g in GRAINS)
    return f"""
    CREATE TRIGGER ledger_rollup_insert AFTER INSERT ON ledger BEGIN {add} END;
    CREATE TRIGGER ledger_rollup_delete AFTER DELETE ON ledger BEGIN {remove} END;
    CREATE TRIGGER ledger_rollup_update AFTER UPDATE ON ledger BEGIN {remove} {add} END;
    """


def migration(sums: Sums = SUMS_V1) -> str:
    """The rollup tables (hourly; daily per tenant and status; hourly totals per status), the
    triggers that keep them, and the rollups of the entries already written: with the sums
    of the first rollup migration (``SUMS_V1``; later migrations add the others)."""
    backfill = "".join(
        f"INSERT INTO {table_of(g)}({', '.join(key_of(g) + sums)}) "
        f"{SQLITE_ROLLUP.aggregated('ledger', g, sums)};"
        for g in GRAINS
    )
    return f"""
    {"".join(_table(g, sums) for g in GRAINS)}
    CREATE INDEX rollups_tenant ON rollups(tenant_id, hour);
    {_triggers(sums)}
    {backfill}
    """


def cache_migration() -> str:
    """The response cache's sums (``CACHE_SUMS``: saved, cache misses) in every rollup table,
    the triggers replaced by ones that keep every sum, and the new sums of the entries already
    written (only entries with cache traffic add to them; their rollup rows exist)."""
    alter = "".join(
        f"ALTER TABLE {table_of(g)} ADD COLUMN {c} INTEGER NOT NULL DEFAULT 0;"
        for g in GRAINS
        for c in CACHE_SUMS
    )
    drop = "".join(f"DROP TRIGGER ledger_rollup_{e};" for e in ("insert", "delete", "update"))
    source = f"ledger WHERE saved <> 0 OR cache = '{MISS}'"
    backfill = "".join(
        f"INSERT INTO {table_of(g)}({', '.join(key_of(g) + CACHE_SUMS)}) SELECT * FROM "
        f"({SQLITE_ROLLUP.aggregated(source, g, CACHE_SUMS)}) WHERE 1 "
        f"{SQLITE_ROLLUP.upsert_tail(table_of(g), g, CACHE_SUMS)};"
        for g in GRAINS
    )
    return f"{alter} {drop} {_triggers(SUMS)} {backfill}"


class ReportReader:
    """A read connection on a thread of its own, opened at the first report and closed with
    the store. WAL lets it read while the data plane writes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:  # on the reader's thread only
        if self._conn is None:
            self._conn = connect(self._path)
            self._conn.execute("PRAGMA query_only=ON")
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="farebox-reports")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: fn(self._db())
        )

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._close_conn).result()
            executor.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SQLiteReports(RollupUsage):
    """``ReportStore.series`` and ``cache_tallies`` for the SQLite stores (mixed into
    ``SQLiteStore``)."""

    _path: Path
    _report_reader: ReportReader | None = None

    @property
    def report_reader(self) -> ReportReader:
        if self._report_reader is None:
            self._report_reader = ReportReader(self._path)
        return self._report_reader

    def close_reports(self) -> None:
        reader, self._report_reader = self._report_reader, None
        if reader is not None:
            reader.close()

    async def series(self, query: SeriesQuery) -> list[SeriesPoint]:
        check(query)
        if query.end <= query.start:
            return []
        sql, params = series_statement(SQLITE_ROLLUP, "", query)

        def read(db: sqlite3.Connection) -> list[SeriesPoint]:
            # row by row on the report thread: a series too big stops at its bound
            fold = Fold(query, split=SQLITE_ROLLUP.split_money)
            with closing(db.execute(sql, params)) as rows:  # ends its read even when refused
                for row in rows:
                    fold.add(row)
            return fold.points()

        return await self.report_reader.run(read)

    async def cache_tallies(
        self, tenant_id: str | None, start: float | None, end: float | None
    ) -> list[CacheTally]:
        return await sqlite_tallies(self.report_reader, tenant_id, start, end)
