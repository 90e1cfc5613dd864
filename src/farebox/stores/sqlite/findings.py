"""Guardrail findings in SQLite (the ``FindingsStore`` role, ``stores.findings``).

Pages and counts are read by the reports' reader (its own connection and thread: never the
store's write connection), walking the ledger's partial index ``ledger_guardrails`` (only the
entries with findings); a finding filter is an ``EXISTS`` over ``json_each`` of the row's
findings. A tally is one ``BEGIN IMMEDIATE`` transaction on the store's write runner: the
database's write lock orders every tally of every process on the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from farebox.stores.findings import (
    MAX_GROUPS,
    FindingCount,
    FindingsPage,
    FindingsQuery,
    minute_of,
    ordered,
    page_of,
    row_of,
    window_floor,
)
from farebox.stores.findings import (
    page_statement as shared_page_statement,
)
from farebox.stores.sql import SQLITE
from farebox.stores.sqlite.conn import Runner
from farebox.stores.sqlite.rollups import ReportReader

MIGRATION = """
CREATE TABLE guardrail_tallies (
    subject TEXT NOT NULL,
    minute INTEGER NOT NULL,
    findings INTEGER NOT NULL,
    PRIMARY KEY (subject, minute)
) WITHOUT ROWID;
CREATE INDEX guardrail_tallies_minute ON guardrail_tallies(minute);
"""
_ADD = (
    "INSERT INTO guardrail_tallies(subject, minute, findings) VALUES (?, ?, ?) "
    "ON CONFLICT(subject, minute) DO UPDATE SET findings = findings + excluded.findings"
)
_SUM = "SELECT COALESCE(SUM(findings), 0) FROM guardrail_tallies WHERE subject = ? AND minute >= ?"
_FORGET = "DELETE FROM guardrail_tallies WHERE subject = ? AND minute < ?"
_MATCH = {"detector": "$.detector", "category": "$.category", "action": "$.action"}


def page_statement(query: FindingsQuery) -> tuple[str, list[Any]]:
    """The SELECT of one page and its parameters. A finding filter is an ``EXISTS`` over
    ``json_each`` of the row's findings."""
    return shared_page_statement(
        query,
        SQLITE,
        "ledger l INDEXED BY ledger_guardrails",
        "l.guardrails <> '[]'",
        _finding_filter,
    )


def _finding_filter(wanted: dict[str, str], mark: Callable[[Any], str]) -> str:
    match = " AND ".join(f"json_extract(f.value, '{_MATCH[k]}') = {mark(v)}"
                         for k, v in wanted.items())  # fmt: skip
    return f"EXISTS (SELECT 1 FROM json_each(l.guardrails) f WHERE {match})"


def counts_statement(tenant_id: str | None, start: float, end: float) -> tuple[str, list[Any]]:
    tenant = "AND l.tenant_id = ? " if tenant_id is not None else ""
    sql = (
        "SELECT l.tenant_id, COALESCE(json_extract(f.value, '$.detector'), ''), "
        "COALESCE(json_extract(f.value, '$.category'), ''), "
        "COALESCE(json_extract(f.value, '$.action'), ''), COUNT(*), COUNT(DISTINCT l.request_id) "
        "FROM ledger l INDEXED BY ledger_guardrails, json_each(l.guardrails) f "
        f"WHERE l.guardrails <> '[]' AND l.started_at >= ? AND l.started_at < ? {tenant}"
        "GROUP BY 1, 2, 3, 4 LIMIT ?"
    )
    params: list[Any] = [start, end, *([tenant_id] if tenant_id is not None else [])]
    return sql, [*params, MAX_GROUPS]


class SQLiteFindings:
    def __init__(self, write: Runner[Any], reader: Callable[[], ReportReader]) -> None:
        self._write = write  # runs a function in a BEGIN IMMEDIATE transaction
        self._reader = reader  # the store's reports reader, made at its first use

    async def page(self, query: FindingsQuery) -> FindingsPage:
        sql, params = page_statement(query)
        found = await self._reader().run(lambda db: db.execute(sql, params).fetchall())
        return page_of([row_of(r) for r in found], query.limit)

    async def counts(self, tenant_id: str | None, start: float, end: float) -> list[FindingCount]:
        sql, params = counts_statement(tenant_id, start, end)
        found = await self._reader().run(lambda db: db.execute(sql, params).fetchall())
        return ordered(FindingCount(str(t), str(d), str(c), str(a), int(n), int(r))
                       for t, d, c, a, n, r in found)  # fmt: skip

    async def tally(self, subject: str, at: float, findings: int) -> tuple[int, int]:
        floor = window_floor(at)

        def add(db: sqlite3.Connection) -> tuple[int, int]:
            db.execute(_ADD, (subject, minute_of(at), findings))
            db.execute(_FORGET, (subject, floor))  # this subject's cells past the hour
            after = int(db.execute(_SUM, (subject, floor)).fetchone()[0])
            return after - findings, after

        result: tuple[int, int] = await self._write(add)
        return result

    async def prune(self, before: float) -> None:
        await self._write(
            lambda db: db.execute("DELETE FROM guardrail_tallies WHERE minute < ?", (before,))
        )
