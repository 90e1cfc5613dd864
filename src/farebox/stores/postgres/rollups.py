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
    KEY,
    MONEY,
    POSTGRES_ROLLUP,
    SUMS,
    RollupUsage,
    check,
    points,
    series_statement,
)

_TRIGGERS = (  # (name, event, transition tables, source rows: (table, sign))
    ("rollup_insert", "INSERT", "NEW TABLE AS new_rows", (("new_rows", ""),)),
    ("rollup_delete", "DELETE", "OLD TABLE AS old_rows", (("old_rows", "-1*"),)),
    ("rollup_update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows",
     (("new_rows", ""), ("old_rows", "-1*"))),
)  # fmt: skip


def _apply(schema: str, sources: tuple[tuple[str, str], ...]) -> str:
    """Add the rows of the transition tables (each with its sign) to the rollups."""
    keys = ", ".join(KEY)
    inner = " UNION ALL ".join(
        POSTGRES_ROLLUP.select_projection(table, sign=sign) for table, sign in sources
    )
    sums = ", ".join(f"SUM({c})" for c in SUMS)
    return (
        f"INSERT INTO {schema}.rollups({', '.join(KEY + SUMS)}) SELECT {keys}, {sums} "
        f"FROM ({inner}) AS p GROUP BY {keys} ORDER BY {keys} "
        f"{POSTGRES_ROLLUP.upsert_tail('rollups')}"
    )


def migration(schema_mark: str) -> str:
    """The rollup table, its triggers, and the rollups of the entries already written.
    ``schema_mark``: what the migration runner replaces with the quoted schema name."""
    s = schema_mark
    keys = ", ".join(
        f"{c} BIGINT NOT NULL" if c == "hour" else f'{c} TEXT COLLATE "C" NOT NULL' for c in KEY
    )
    sums = ", ".join(
        f"{c} {'NUMERIC(38, 0)' if c in MONEY else 'BIGINT'} NOT NULL DEFAULT 0" for c in SUMS
    )
    parts = [
        f"CREATE TABLE {s}.rollups ({keys}, {sums}, PRIMARY KEY ({', '.join(KEY)}));",
        f"CREATE INDEX rollups_tenant ON {s}.rollups(tenant_id, hour);",
    ]
    for name, event, tables, sources in _TRIGGERS:
        parts.append(
            f"CREATE FUNCTION {s}.{name}() RETURNS trigger LANGUAGE plpgsql AS $fbx$ BEGIN "
            f"{_apply(s, sources)}; RETURN NULL; END $fbx$;"
        )
        parts.append(
            f"CREATE TRIGGER ledger_{name} AFTER {event} ON {s}.ledger REFERENCING {tables} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.{name}();"
        )
    cols = ", ".join(KEY + SUMS)
    parts.append(f"INSERT INTO {s}.rollups({cols}) {POSTGRES_ROLLUP.aggregated(f'{s}.ledger')};")
    return "\n".join(parts)


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
        return points(query, await self._pool.fetch(sql, *params))
