"""The billing webhooks' inbox in PostgreSQL (the ``InboxStore`` role)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farebox.core.inbound import ParkedGrant
from farebox.stores.inbox_rows import COLS, parked_of, values

MIGRATION = """
CREATE TABLE {s}.inbox_marks (
    sink TEXT NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sink, kind, ref)
);
CREATE TABLE {s}.inbox_parked (
    id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    parked_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    tenant_id TEXT,
    applied_at DOUBLE PRECISION,
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    action TEXT NOT NULL,
    upstream_id TEXT NOT NULL,
    customer TEXT NOT NULL,
    amount TEXT,
    kind TEXT NOT NULL,
    expires_at DOUBLE PRECISION,
    note TEXT,
    problem TEXT,
    UNIQUE (sink, event_id)
);
"""


class PostgresInbox:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        cols = ",".join(COLS)
        marks = ",".join(f"${i}" for i in range(1, len(COLS) + 1))
        self._mark = (
            f"INSERT INTO {schema}.inbox_marks VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING RETURNING 1"
        )
        self._marked = f"SELECT 1 FROM {schema}.inbox_marks WHERE sink=$1 AND kind=$2 AND ref=$3"
        self._insert = (
            f"INSERT INTO {schema}.inbox_parked({cols}) VALUES ({marks}) "
            "ON CONFLICT (sink, event_id) DO NOTHING"
        )
        self._select = f"SELECT {cols} FROM {schema}.inbox_parked "
        self._settle = (
            f"UPDATE {schema}.inbox_parked SET status = 'applied', tenant_id = $1, "
            "applied_at = $2 WHERE id = $3 AND status = 'parked' RETURNING 1"
        )

    async def mark(self, sink: str, kind: str, ref: str, at: float) -> bool:
        async with self._pool().acquire() as conn:
            return await conn.fetchval(self._mark, sink, kind, ref, at) is not None

    async def marked(self, sink: str, kind: str, ref: str) -> bool:
        async with self._pool().acquire() as conn:
            return await conn.fetchval(self._marked, sink, kind, ref) is not None

    async def park(self, parked: ParkedGrant) -> ParkedGrant:
        by_event = self._select + "WHERE sink = $1 AND event_id = $2"
        async with self._pool().acquire() as conn:
            await conn.execute(self._insert, *values(parked))
            row = await conn.fetchrow(by_event, parked.grant.sink, parked.grant.event_id)
        return parked_of(tuple(row))

    async def parked(self, status: str | None = None) -> list[ParkedGrant]:
        where, params = ("WHERE status = $1 ", (status,)) if status else ("", ())
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(self._select + where + "ORDER BY parked_at, id", *params)
        return [parked_of(tuple(r)) for r in rows]

    async def get_parked(self, parked_id: str) -> ParkedGrant | None:
        async with self._pool().acquire() as conn:
            row = await conn.fetchrow(self._select + "WHERE id = $1", parked_id)
        return None if row is None else parked_of(tuple(row))

    async def settle_parked(self, parked_id: str, tenant_id: str, at: float) -> bool:
        async with self._pool().acquire() as conn:
            return await conn.fetchval(self._settle, tenant_id, at, parked_id) is not None
