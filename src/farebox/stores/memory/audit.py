"""The audit log in process (the ``AuditStore`` role): a list, appended to without an await
between reading its last record and adding the next, so appends never interleave."""

from __future__ import annotations

from collections.abc import Callable

from farebox.core.audit import GENESIS, AuditQuery, AuditRecord, after_cursor, matches


class MemoryAudit:
    def __init__(self) -> None:
        self._records: list[AuditRecord] = []

    async def append(self, seal: Callable[[int, str], AuditRecord]) -> AuditRecord:
        last = self._records[-1] if self._records else None
        record = seal(last.seq + 1, last.hash) if last else seal(1, GENESIS)
        self._records.append(record)
        return record

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        ordered = reversed(self._records) if query.descending else iter(self._records)
        found = [r for r in ordered if after_cursor(r, query) and matches(r, query)]
        return found[: max(query.limit, 0)]

    async def scan(self, after: int, limit: int) -> list[AuditRecord]:
        return [r for r in self._records if r.seq > after][:limit]
