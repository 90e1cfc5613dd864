"""The request log on SQLite (``ReportStore.requests``): one page per call, read on a
connection of its own, in a worker thread, never on the store's write connection or thread.

The statement is ``stores.request_log.page_statement``; the indexes and the ``ledger_tags``
side table come from the schema (``stores/sqlite/schema.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from farebox.core.records import LedgerEntry, RequestPage, RequestQuery
from farebox.stores.request_log import page_of, page_statement
from farebox.stores.sql import LEDGER_COLS, SQLITE
from farebox.stores.sqlite.conn import connect
from farebox.stores.sqlite.rows import decode

READ_BUSY_MS = 5_000  # a reader waits this long at most (WAL readers only wait on recovery)


class SQLiteRequestLog:
    def __init__(self, path: Path, synchronous: str = "normal") -> None:
        self._path = path
        self._synchronous = synchronous

    async def page(self, query: RequestQuery) -> RequestPage:
        sql, params = page_statement(SQLITE, "", query)  # a bad cursor fails here, unread
        rows = await asyncio.to_thread(self._read, sql, params)
        return page_of(rows, query.limit)

    def _read(self, sql: str, params: list[Any]) -> list[LedgerEntry]:
        with contextlib.closing(self._connect()) as db:
            found = db.execute(sql, params).fetchall()
        return [LedgerEntry(**decode(LEDGER_COLS, row)) for row in found]

    def _connect(self) -> sqlite3.Connection:
        db = connect(self._path, self._synchronous, busy_timeout_ms=READ_BUSY_MS)
        db.execute("PRAGMA query_only=ON")
        return db

    def plan(self, query: RequestQuery) -> list[str]:
        """``EXPLAIN QUERY PLAN`` of the page's statement: its steps' details (for tests)."""
        sql, params = page_statement(SQLITE, "", query)
        with contextlib.closing(self._connect()) as db:
            return [str(r[3]) for r in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
