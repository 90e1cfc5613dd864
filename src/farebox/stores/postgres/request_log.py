"""The request log on PostgreSQL (``ReportStore.requests``): one page per call, one statement
on a pooled connection (never one the store holds for the ledger's writes).

The statement is ``stores.request_log.page_statement``; the indexes and the ``ledger_tags``
side table come from the schema (``stores/postgres/schema.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farebox.core.records import LedgerEntry, RequestPage, RequestQuery
from farebox.stores.request_log import page_of, page_statement
from farebox.stores.sql import POSTGRES

_MONEY_COLS = ("cost", "revenue", "saved")  # NUMERIC: Decimal on read, int in the entry


def _entry(row: Any) -> LedgerEntry:
    data = dict(row)
    for col in _MONEY_COLS:
        data[col] = int(data[col])
    return LedgerEntry(**data)


class PostgresRequestLog:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        self._prefix = f"{schema}."  # the quoted schema

    def statement(self, query: RequestQuery) -> tuple[str, list[Any]]:
        return page_statement(POSTGRES, self._prefix, query)

    async def page(self, query: RequestQuery) -> RequestPage:
        sql, params = self.statement(query)  # a bad cursor fails here, unread
        rows = await self._pool().fetch(sql, *params)
        return page_of([_entry(r) for r in rows], query.limit)
