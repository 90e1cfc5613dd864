"""The billing webhooks' inbox in SQLite (the ``InboxStore`` role)."""

from __future__ import annotations

import sqlite3
from typing import Any

from farebox.core.inbound import ParkedGrant
from farebox.stores.inbox_rows import COLS, parked_of, values
from farebox.stores.sqlite.conn import Runner

MIGRATION = """
CREATE TABLE inbox_marks (
    sink TEXT NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (sink, kind, ref)
) WITHOUT ROWID;
CREATE TABLE inbox_parked (
    id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    parked_at REAL NOT NULL,
    status TEXT NOT NULL,
    tenant_id TEXT,
    applied_at REAL,
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    action TEXT NOT NULL,
    upstream_id TEXT NOT NULL,
    customer TEXT NOT NULL,
    amount TEXT,
    kind TEXT NOT NULL,
    expires_at REAL,
    note TEXT,
    problem TEXT,
    UNIQUE (sink, event_id)
);
"""
_SELECT = f"SELECT {','.join(COLS)} FROM inbox_parked "
_INSERT = (
    f"INSERT INTO inbox_parked({','.join(COLS)}) VALUES ({','.join('?' * len(COLS))}) "
    "ON CONFLICT (sink, event_id) DO NOTHING"
)


class SQLiteInbox:
    def __init__(self, write: Runner[Any], read: Runner[Any]) -> None:
        self._write = write  # runs a function in a write transaction
        self._read = read

    async def mark(self, sink: str, kind: str, ref: str, at: float) -> bool:
        sql = "INSERT INTO inbox_marks VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
        count = await self._write(lambda db: db.execute(sql, (sink, kind, ref, at)).rowcount)
        return bool(count == 1)

    async def marked(self, sink: str, kind: str, ref: str) -> bool:
        sql = "SELECT 1 FROM inbox_marks WHERE sink = ? AND kind = ? AND ref = ?"
        found = await self._read(lambda db: db.execute(sql, (sink, kind, ref)).fetchone())
        return found is not None

    async def park(self, parked: ParkedGrant) -> ParkedGrant:
        row = values(parked)
        key = (parked.grant.sink, parked.grant.event_id)

        def write(db: sqlite3.Connection) -> Any:
            db.execute(_INSERT, row)
            return db.execute(_SELECT + "WHERE sink = ? AND event_id = ?", key).fetchone()

        return parked_of(await self._write(write))

    async def parked(self, status: str | None = None) -> list[ParkedGrant]:
        where, params = ("WHERE status = ? ", (status,)) if status else ("", ())
        sql = _SELECT + where + "ORDER BY parked_at, id"
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
        return [parked_of(r) for r in rows]

    async def get_parked(self, parked_id: str) -> ParkedGrant | None:
        sql = _SELECT + "WHERE id = ?"
        row = await self._read(lambda db: db.execute(sql, (parked_id,)).fetchone())
        return None if row is None else parked_of(row)

    async def settle_parked(self, parked_id: str, tenant_id: str, at: float) -> bool:
        sql = (
            "UPDATE inbox_parked SET status = 'applied', tenant_id = ?, applied_at = ? "
            "WHERE id = ? AND status = 'parked'"
        )
        count = await self._write(lambda db: db.execute(sql, (tenant_id, at, parked_id)).rowcount)
        return bool(count == 1)
