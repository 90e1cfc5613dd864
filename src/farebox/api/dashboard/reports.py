"""The dashboard's time series and request log, read through the reports seam.

``ReportStore.series`` (hourly rollups) and ``ReportStore.requests`` (the request log) are used
when the store has them; a store without rollups falls back to the usage report grouped by hour
(the same sums, read from the ledger), and one without a request log says so on the page.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

from farebox.core.money import PICO_PER_USD
from farebox.core.records import RequestPage, RequestQuery, SeriesQuery
from farebox.identity.tenancy import Tenancy

HOUR = 3600
MAX_HOURS = 24 * 31
PAGE_SIZE = 50


def _usd(pico: int) -> float:
    """For the charts only: tables show the exact decimal strings."""
    return pico / PICO_PER_USD


class Reports:
    def __init__(self, store: object, tenancy: Tenancy) -> None:
        self._store = store
        self._tenancy = tenancy

    @property
    def has_request_log(self) -> bool:
        return callable(getattr(self._store, "requests", None))

    async def hourly(self, now: float, hours: int, tenant: str | None) -> dict[str, Any]:
        """Cost, revenue, margin and requests per hour over the last ``hours`` hours, every
        hour present (zero when idle): uPlot's columns, money as floats of USD."""
        hours = max(1, min(hours, MAX_HOURS))
        end = (int(now) // HOUR + 1) * HOUR
        start = end - hours * HOUR
        sums = await self._sums(start, end, tenant)
        ts = list(range(start, end, HOUR))
        rows = [sums.get(t, (0, 0, 0)) for t in ts]
        return {
            "t": ts,
            "requests": [r[0] for r in rows],
            "cost": [_usd(r[1]) for r in rows],
            "revenue": [_usd(r[2]) for r in rows],
            "margin": [_usd(r[2] - r[1]) for r in rows],
        }

    async def _sums(self, start: int, end: int, tenant: str | None) -> dict[int, tuple[int, ...]]:
        series = getattr(self._store, "series", None)
        if callable(series):
            query = SeriesQuery(float(start), float(end), "hour", tenant_id=tenant)
            points = await series(query)
            return {int(p.bucket): (p.requests, p.cost, p.revenue) for p in points}
        rows = await self._tenancy.usage(tenant, float(start), float(end), "hour")
        out: dict[int, tuple[int, ...]] = {}
        for row in rows:
            if row.group:
                stamp = calendar.timegm(time.strptime(row.group, "%Y-%m-%dT%H:00:00Z"))
                out[stamp] = (row.requests, row.cost, row.revenue)
        return out

    async def requests(self, query: RequestQuery) -> RequestPage | None:
        """One page of the request log, or None when the store keeps none."""
        read = getattr(self._store, "requests", None)
        if not callable(read):
            return None
        page: RequestPage = await read(query)
        return page
