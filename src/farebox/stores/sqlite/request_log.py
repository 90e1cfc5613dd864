"""The request log on SQLite (``ReportStore.requests``): one page per call, read by the
reports' reader (a read connection and thread of their own), never on the store's write
connection or thread.

The statement is ``stores.request_log.page_statement``; the indexes and the ``ledger_tags``
side table come from the schema (``stores/sqlite/schema.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from farebox.core.records import LedgerEntry, RequestPage, RequestQuery
from farebox.stores.request_log import page_of, page_statement
from farebox.stores.sql import LEDGER_COLS, SQLITE
from farebox.stores.sqlite.conn import connect
from farebox.stores.sqlite.rollups import ReportReader
from farebox.stores.sqlite.rows import decode

READ_BUSY_MS = 5_000  # a reader waits this long at most (WAL readers only wait on recovery)


class SQLiteRequestLog:
    """The request log's pages, read by the reports' reader (their own read connection and
    thread: ``stores/sqlite/rollups.py``), and the plan of a page's statement."""

    def __init__(self, path: Path, reader: Callable[[], ReportReader]) -> None:
        self._path = path
        self._reader = reader  # the store's reports reader, made at its first use

    async def page(self, query: RequestQuery) -> RequestPage:
        sql, params = page_statement(SQLITE, "", query)  # a bad cursor fails here, unread
        found = await self._reader().run(lambda db: db.execute(sql, params).fetchall())
        return page_of([LedgerEntry(**decode(LEDGER_COLS, row)) for row in found], query.limit)

    def plan(self, query: RequestQuery) -> list[str]:
        """``EXPLAIN QUERY PLAN`` of the page's statement: its steps' details (for tests)."""
        sql, params = page_statement(SQLITE, "", query)
        with contextlib.closing(connect(self._path, busy_timeout_ms=READ_BUSY_MS)) as db:
            return [str(r[3]) for r in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
