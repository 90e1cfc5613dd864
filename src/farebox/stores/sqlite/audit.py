"""The audit log in SQLite (the ``AuditStore`` role). An append reads the last record and
writes the next in one ``BEGIN IMMEDIATE`` transaction (the store's write runner): the
database's write lock orders every writer, in this process or any other on the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from farebox.core.audit import GENESIS, AuditQuery, AuditRecord
from farebox.stores.audit_rows import INSERT, LAST, SCAN, query_sql, record_of, values
from farebox.stores.sqlite.conn import Runner

MIGRATION = """
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    change TEXT NOT NULL,
    ip TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log(actor, seq);
CREATE INDEX audit_log_target ON audit_log(target, seq);
CREATE INDEX audit_log_at ON audit_log(at);
"""


class SQLiteAudit:
    def __init__(self, write: Runner[Any], read: Runner[Any]) -> None:
        self._write = write  # runs a function in a BEGIN IMMEDIATE transaction
        self._read = read

    async def append(self, seal: Callable[[int, str], AuditRecord]) -> AuditRecord:
        def append(db: sqlite3.Connection) -> AuditRecord:
            last = db.execute(LAST).fetchone()
            record = seal(int(last[0]) + 1, str(last[1])) if last else seal(1, GENESIS)
            db.execute(INSERT, values(record))
            return record

        result: AuditRecord = await self._write(append)
        return result

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        sql, args = query_sql(query)
        rows = await self._read(lambda db: db.execute(sql, args).fetchall())
        return [record_of(r) for r in rows]

    async def scan(self, after: int, limit: int) -> list[AuditRecord]:
        rows = await self._read(lambda db: db.execute(SCAN, (after, limit)).fetchall())
        return [record_of(r) for r in rows]
