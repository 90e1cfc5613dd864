"""Hourly rollups on PostgreSQL (``stores/rollup_rows.py`` says what they hold): the table and
the statement-level ledger triggers that keep it (a migration), and ``series``.

The triggers see a statement's rows all at once (transition tables): the ledger writer's one
``INSERT .. ON CONFLICT`` statement per batch adds one grouped upsert per batch, not one per
entry, in the same statement and so the same transaction. The upsert takes rollup rows in
key order, so concurrent batches (replicas) never deadlock on them.
"""

from __future__ import annotations

from typing import Any

from farebox.core.cache import MISS, CacheTally
from farebox.core.records import SeriesPoint, SeriesQuery
from farebox.stores.cache_tallies import postgres_tallies
from farebox.stores.rollup_rows import (
    CACHE_SUMS,
    DAY,
    GRAINS,
    MONEY,
    SUMS,
    SUMS_V1,
    Fold,
    Grain,
    RollupUsage,
    check,
    key_of,
    table_of,
)
from farebox.stores.rollup_sql import POSTGRES_ROLLUP, Sums, series_statement

_TRIGGERS = (  # (name, event, transition tables, source rows: (table, sign))
    ("rollup_insert", "INSERT", "NEW TABLE AS new_rows", (("new_rows", ""),)),
    ("rollup_delete", "DELETE", "OLD TABLE AS old_rows", (("old_rows", "-1*"),)),
    ("rollup_update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows",
     (("new_rows", ""), ("old_rows", "-1*"))),
)  # fmt: skip


def _apply(schema: str, sources: tuple[tuple[str, str], ...], sums: Sums) -> str:
    """One statement adding the rows of the transition tables (each with its sign) to every
    rollup table: the rows projected once (hourly keys), then summed per key of each."""
    hourly = " UNION ALL ".join(
        POSTGRES_ROLLUP.select_projection(table, sign=sign, sums=sums) for table, sign in sources
    )
    derived = {  # each grain's key columns, as expressions of the hourly projection
        "hourly": {c: c for c in key_of("hourly")},
        "daily": {"hour": f"hour / {DAY} * {DAY}", "tenant_id": "tenant_id", "status": "status"},
        "total": {"hour": "hour", "status": "status",
                  "shard": POSTGRES_ROLLUP.shard.format("tenant_id")},
    }  # fmt: skip
    steps = []
    for grain in GRAINS:
        table, key = table_of(grain), key_of(grain)
        exprs = ", ".join(f"{derived[grain][c]} AS {c}" for c in key)
        keys = ", ".join(key)
        summed = ", ".join(f"SUM({c})" for c in sums)
        steps.append(
            f"INSERT INTO {schema}.{table}({', '.join(key + sums)}) SELECT {keys}, {summed} "
            f"FROM (SELECT {exprs}, {', '.join(sums)} FROM p) AS k GROUP BY {keys} "
            f"ORDER BY {keys} {POSTGRES_ROLLUP.upsert_tail(table, grain, sums)}"
        )
    ctes = ", ".join(f"w{i} AS ({step})" for i, step in enumerate(steps[:-1]))
    return f"WITH p AS MATERIALIZED ({hourly}), {ctes} {steps[-1]}"


def _column(c: str) -> str:
    return f"{c} {'NUMERIC(38, 0)' if c in MONEY else 'BIGINT'} NOT NULL DEFAULT 0"


def _table(s: str, grain: Grain, sums: Sums) -> str:
    key = key_of(grain)
    keys = ", ".join(
        f"{c} BIGINT NOT NULL" if c in ("hour", "shard") else f'{c} TEXT COLLATE "C" NOT NULL'
        for c in key
    )
    cols = ", ".join(_column(c) for c in sums)
    return f"CREATE TABLE {s}.{table_of(grain)} ({keys}, {cols}, PRIMARY KEY ({', '.join(key)}));"


def _function(s: str, name: str, sources: tuple[tuple[str, str], ...], sums: Sums) -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {s}.{name}() RETURNS trigger LANGUAGE plpgsql AS $fbx$ "
        f"BEGIN {_apply(s, sources, sums)}; RETURN NULL; END $fbx$;"
    )


def migration(schema_mark: str, sums: Sums = SUMS_V1) -> str:
    """The rollup tables (hourly; daily per tenant and status; hourly totals per status),
    their triggers, and the rollups of the entries already written, with the sums of the
    first rollup migration (``SUMS_V1``; later migrations add the others).
    ``schema_mark``: what the migration runner replaces with the quoted schema name."""
    s = schema_mark
    parts = [*(_table(s, g, sums) for g in GRAINS),
             f"CREATE INDEX rollups_tenant ON {s}.rollups(tenant_id, hour);"]  # fmt: skip
    for name, event, tables, sources in _TRIGGERS:
        parts.append(_function(s, name, sources, sums))
        parts.append(
            f"CREATE TRIGGER ledger_{name} AFTER {event} ON {s}.ledger REFERENCING {tables} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.{name}();"
        )
    for g in GRAINS:
        cols = ", ".join(key_of(g) + sums)
        rows = POSTGRES_ROLLUP.aggregated(f"{s}.ledger", g, sums)
        parts.append(f"INSERT INTO {s}.{table_of(g)}({cols}) {rows};")
    return "\n".join(parts)


def cache_migration(schema_mark: str) -> str:
    """The response cache's sums (``CACHE_SUMS``: saved, cache misses) in every rollup table,
    the trigger functions replaced by ones that keep every sum, and the new sums of the
    entries already written (only entries with cache traffic add to them; their rollup rows
    exist). The migration's lock and transaction keep writers out meanwhile."""
    s = schema_mark
    parts = [
        f"ALTER TABLE {s}.{table_of(g)} "
        + ", ".join(f"ADD COLUMN {_column(c)}" for c in CACHE_SUMS)
        + ";"
        for g in GRAINS
    ]
    parts += [_function(s, name, sources, SUMS) for name, _, _, sources in _TRIGGERS]
    source = f"{s}.ledger WHERE saved <> 0 OR cache = '{MISS}'"
    for g in GRAINS:
        cols = ", ".join(key_of(g) + CACHE_SUMS)
        rows = POSTGRES_ROLLUP.aggregated(source, g, CACHE_SUMS)
        tail = POSTGRES_ROLLUP.upsert_tail(table_of(g), g, CACHE_SUMS)
        parts.append(f"INSERT INTO {s}.{table_of(g)}({cols}) {rows} {tail};")
    return "\n".join(parts)


CHUNK = 1_000  # rows a series' cursor fetches at a time


class PostgresReports(RollupUsage):
    """``ReportStore.series`` and ``cache_tallies`` for ``PostgresStore`` (a pool connection:
    never the ledger writer's statement)."""

    _s: str
    _pool: Any  # the store's (timed) pool

    async def series(self, query: SeriesQuery) -> list[SeriesPoint]:
        check(query)
        if query.end <= query.start:
            return []
        sql, params = series_statement(POSTGRES_ROLLUP, f"{self._s}.", query)
        fold = Fold(query, split=POSTGRES_ROLLUP.split_money)
        # a cursor (in a read-only transaction) fetches a chunk at a time: a series too big
        # stops at its bound, never holding more than a chunk of rows it will not answer
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            async for row in conn.cursor(sql, *params, prefetch=CHUNK):
                fold.add(row)
        return fold.points()

    async def cache_tallies(
        self, tenant_id: str | None, start: float | None, end: float | None
    ) -> list[CacheTally]:
        return await postgres_tallies(self._pool, self._s, tenant_id, start, end)
