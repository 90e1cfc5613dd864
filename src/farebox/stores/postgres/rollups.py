"""Hourly rollups on PostgreSQL (``stores/rollup_rows.py`` says what they hold): the table and
the statement-level ledger triggers that keep it (a migration), and ``series``.

The triggers see a statement's rows all at once (transition tables): the ledger writer's one
``INSERT .. ON CONFLICT`` statement per batch adds one grouped upsert per batch, not one per
entry, in the same statement and so the same transaction. The upsert takes rollup rows in
key order, so concurrent batches (replicas) never deadlock on them.
"""

from __future__ import annotations

from typing import Any

from farebox.core.records import SeriesPoint, SeriesQuery
from farebox.stores.rollup_rows import (
    DAY,
    GRAINS,
    MONEY,
    SUMS,
    Fold,
    Grain,
    RollupUsage,
    check,
    key_of,
    table_of,
)
from farebox.stores.rollup_sql import POSTGRES_ROLLUP, series_statement

_TRIGGERS = (  # (name, event, transition tables, source rows: (table, sign))
    ("rollup_insert", "INSERT", "NEW TABLE AS new_rows", (("new_rows", ""),)),
    ("rollup_delete", "DELETE", "OLD TABLE AS old_rows", (("old_rows", "-1*"),)),
    ("rollup_update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows",
     (("new_rows", ""), ("old_rows", "-1*"))),
)  # fmt: skip


def _apply(schema: str, sources: tuple[tuple[str, str], ...]) -> str:
    """One statement adding the rows of the transition tables (each with its sign) to every
    rollup table: the rows projected once (hourly keys), then summed per key of each."""
    hourly = " UNION ALL ".join(
        POSTGRES_ROLLUP.select_projection(table, sign=sign) for table, sign in sources
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
        sums = ", ".join(f"SUM({c})" for c in SUMS)
        steps.append(
            f"INSERT INTO {schema}.{table}({', '.join(key + SUMS)}) SELECT {keys}, {sums} "
            f"FROM (SELECT {exprs}, {', '.join(SUMS)} FROM p) AS k GROUP BY {keys} "
            f"ORDER BY {keys} {POSTGRES_ROLLUP.upsert_tail(table, grain)}"
        )
    ctes = ", ".join(f"w{i} AS ({step})" for i, step in enumerate(steps[:-1]))
    return f"WITH p AS MATERIALIZED ({hourly}), {ctes} {steps[-1]}"


def _table(s: str, grain: Grain) -> str:
    key = key_of(grain)
    keys = ", ".join(
        f"{c} BIGINT NOT NULL" if c in ("hour", "shard") else f'{c} TEXT COLLATE "C" NOT NULL'
        for c in key
    )
    sums = ", ".join(
        f"{c} {'NUMERIC(38, 0)' if c in MONEY else 'BIGINT'} NOT NULL DEFAULT 0" for c in SUMS
    )
    return f"CREATE TABLE {s}.{table_of(grain)} ({keys}, {sums}, PRIMARY KEY ({', '.join(key)}));"


def migration(schema_mark: str) -> str:
    """The rollup tables (hourly; daily per tenant and status; hourly totals per status),
    their triggers, and the
    rollups of the entries already written. ``schema_mark``: what the migration runner
    replaces with the quoted schema name."""
    s = schema_mark
    parts = [*(_table(s, g) for g in GRAINS),
             f"CREATE INDEX rollups_tenant ON {s}.rollups(tenant_id, hour);"]  # fmt: skip
    for name, event, tables, sources in _TRIGGERS:
        body = f"{_apply(s, sources)};"
        parts.append(
            f"CREATE FUNCTION {s}.{name}() RETURNS trigger LANGUAGE plpgsql AS $fbx$ BEGIN "
            f"{body} RETURN NULL; END $fbx$;"
        )
        parts.append(
            f"CREATE TRIGGER ledger_{name} AFTER {event} ON {s}.ledger REFERENCING {tables} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.{name}();"
        )
    for g in GRAINS:
        cols = ", ".join(key_of(g) + SUMS)
        rows = POSTGRES_ROLLUP.aggregated(f"{s}.ledger", g)
        parts.append(f"INSERT INTO {s}.{table_of(g)}({cols}) {rows};")
    return "\n".join(parts)


CHUNK = 1_000  # rows a series' cursor fetches at a time


class PostgresReports(RollupUsage):
    """``ReportStore.series`` for ``PostgresStore`` (a pool connection: never the ledger
    writer's statement)."""

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
