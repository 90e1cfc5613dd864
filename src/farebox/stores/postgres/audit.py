"""The audit log in PostgreSQL (the ``AuditStore`` role). An append takes a transaction-scoped
advisory lock named after the schema, reads the last record and inserts the next: every
writer (workers, replicas) waits its turn, so the chain never forks (and ``seq`` is the
primary key besides)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from farebox.core.audit import GENESIS, AuditQuery, AuditRecord
from farebox.stores.audit_rows import INSERT, LAST, SCAN, numbered, query_sql, record_of, values

MIGRATION = """
CREATE TABLE {s}.audit_log (
    seq BIGINT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT COLLATE "C" NOT NULL,
    role TEXT NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    change TEXT NOT NULL,
    ip TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_actor ON {s}.audit_log(actor, seq);
CREATE INDEX audit_log_target ON {s}.audit_log(target, seq);
CREATE INDEX audit_log_at ON {s}.audit_log(at);
"""


def append_lock(schema: str) -> int:
    """A stable signed 64-bit advisory lock id for appending to ``schema``'s audit log."""
    digest = hashlib.blake2b(f"farebox:audit:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresAudit:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        self._schema = schema
        self._lock = append_lock(schema)
        self._insert = numbered(INSERT, schema)
        self._last = numbered(LAST, schema)
        self._scan = numbered(SCAN, schema)

    async def append(self, seal: Callable[[int, str], AuditRecord]) -> AuditRecord:
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock)
            last = await conn.fetchrow(self._last)
            record = seal(int(last[0]) + 1, str(last[1])) if last else seal(1, GENESIS)
            await conn.execute(self._insert, *values(record))
        return record

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        sql, args = query_sql(query)
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(numbered(sql, self._schema), *args)
        return [record_of(tuple(r)) for r in rows]

    async def scan(self, after: int, limit: int) -> list[AuditRecord]:
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(self._scan, after, limit)
        return [record_of(tuple(r)) for r in rows]
