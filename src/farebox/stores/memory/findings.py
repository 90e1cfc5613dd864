"""Guardrail findings in process (the ``FindingsStore`` role, ``stores.findings``): read from
the memory store's ledger; the tally's cells are a dict, changed without an await between
the read and the write, so tallies never interleave."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from farebox.core.records import LedgerEntry
from farebox.stores.findings import (
    FindingCount,
    FindingRow,
    FindingsPage,
    FindingsQuery,
    after_of,
    check,
    clean,
    count_rows,
    minute_of,
    page_of,
    selects,
    window_floor,
)


def _row(e: LedgerEntry) -> FindingRow:
    return FindingRow(e.request_id, e.tenant_id, e.key_id, e.workspace, e.user,
                      e.model_requested, e.model_served, e.endpoint, e.status, e.http_status,
                      e.started_at, clean(e.guardrails))  # fmt: skip


class MemoryFindings:
    def __init__(self, ledger: Callable[[], Iterable[LedgerEntry]]) -> None:
        self._ledger = ledger  # the store's entries, read at each call
        self._cells: dict[tuple[str, int], int] = {}

    def _rows(self) -> list[FindingRow]:
        return [_row(e) for e in self._ledger() if e.guardrails]

    async def page(self, query: FindingsQuery) -> FindingsPage:
        limit = check(query)
        after = after_of(query)
        found = [
            r for r in self._rows()
            if selects(r, query) and (after is None or (r.started_at, r.request_id) < after)
        ]  # fmt: skip
        found.sort(key=lambda r: (r.started_at, r.request_id), reverse=True)
        return page_of(found[: limit + 1], limit)

    async def counts(self, tenant_id: str | None, start: float, end: float) -> list[FindingCount]:
        query = FindingsQuery(tenant_id=tenant_id, start=start, end=end)
        return count_rows(r for r in self._rows() if selects(r, query))

    async def tally(self, subject: str, at: float, findings: int) -> tuple[int, int]:
        floor = window_floor(at)
        cell = (subject, minute_of(at))
        self._cells[cell] = self._cells.get(cell, 0) + findings
        after = sum(n for (s, m), n in self._cells.items() if s == subject and m >= floor)
        return after - findings, after

    async def prune(self, before: float) -> None:
        self._cells = {k: n for k, n in self._cells.items() if k[1] >= before}
