"""``ReportStore.series`` in memory: the same sums and buckets as the SQL stores' rollups,
computed from the entries themselves (the memory store is for tests and demos; it keeps no
rollup table)."""

from __future__ import annotations

from farebox.core.records import LedgerEntry, SeriesPoint, SeriesQuery
from farebox.stores.rollup_rows import check, entry_rows, points


class MemoryReports:
    _ledger: dict[str, LedgerEntry]

    async def series(self, query: SeriesQuery) -> list[SeriesPoint]:
        check(query)
        if query.end <= query.start:
            return []
        # (the entries are in memory already: only the points are bounded)
        return points(query, entry_rows(query, self._ledger.values()), rows_bound=False)
