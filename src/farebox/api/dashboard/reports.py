"""The dashboard's time series and request log, read through the reports seam:
``ReportStore.series`` (hourly rollups) and ``ReportStore.requests`` (the request log)."""

from __future__ import annotations

from typing import Any

from farebox.core.money import PICO_PER_USD
from farebox.core.records import RequestPage, RequestQuery, SeriesQuery
from farebox.stores.base import ReportStore

HOUR = 3600
MAX_HOURS = 24 * 31
PAGE_SIZE = 50


def _usd(pico: int) -> float:
    """For the charts only: tables show the exact decimal strings."""
    return pico / PICO_PER_USD


class Reports:
    def __init__(self, store: ReportStore) -> None:
        self._store = store

    async def hourly(self, now: float, hours: int, tenant: str | None) -> dict[str, Any]:
        """Cost, revenue, margin and requests per hour over the last ``hours`` hours, every
        hour present (zero when idle): uPlot's columns, money as floats of USD."""
        hours = max(1, min(hours, MAX_HOURS))
        end = (int(now) // HOUR + 1) * HOUR
        start = end - hours * HOUR
        points = await self._store.series(
            SeriesQuery(float(start), float(end), "hour", tenant_id=tenant)
        )
        sums = {int(p.bucket): (p.requests, p.cost, p.revenue) for p in points}
        ts = list(range(start, end, HOUR))
        rows = [sums.get(t, (0, 0, 0)) for t in ts]
        return {
            "t": ts,
            "requests": [r[0] for r in rows],
            "cost": [_usd(r[1]) for r in rows],
            "revenue": [_usd(r[2]) for r in rows],
            "margin": [_usd(r[2] - r[1]) for r in rows],
        }

    async def requests(self, query: RequestQuery) -> RequestPage:
        """One page of the request log."""
        return await self._store.requests(query)
