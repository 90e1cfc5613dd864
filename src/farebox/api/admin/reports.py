"""Admin reports over the ledger's hourly rollups: ``GET /series`` (sums per hour, day, month
or the whole range, in any IANA time zone, grouped and filtered) and ``GET /top-spenders``
(the top N or top X% of tenants by cost or revenue in a period, with their share). Money is
an exact decimal string of USD, as everywhere in the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import Query

from farebox.api.admin.billing import Month
from farebox.api.admin.params import TenantIdFilter, parse_time
from farebox.api.context import Services
from farebox.billing.margins import past_month
from farebox.billing.top_spenders import top_spenders as month_top_spenders
from farebox.core.money import format_usd
from farebox.core.records import LATENCY_BOUNDS_MS, SeriesPoint, SeriesQuery
from farebox.errors import InvalidRequest
from farebox.identity.tenancy import Tenancy
from farebox.observe.reports import Reports, TopSpenders

Bucket = Literal["hour", "day", "month", "all"]
Dimension = Literal["tenant", "key", "model", "feature", "status"]
Name = Annotated[str | None, Query(min_length=1, max_length=256)]
# the longest range per bucket size: a series answers at most a few thousand buckets per group.
# Within these, the store sums days and months in SQL (at most ``MAX_BOUNDARIES`` of them),
# and refuses a series of more than ``MAX_SERIES_POINTS`` points (a 400) as it reads it.
MAX_RANGE_S = {"hour": 93 * 86_400, "day": 3_700 * 86_400, "month": 20 * 366 * 86_400}


def _range(start: str | None, end: str | None) -> tuple[float, float]:
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if lo is None or hi is None:
        missing = "start" if lo is None else "end"
        raise InvalidRequest(f"'{missing}' is required (unix seconds or ISO 8601).", param=missing)
    if hi <= lo:
        raise InvalidRequest("'end' must be after 'start'.", param="end")
    return lo, hi


def point_json(p: SeriesPoint, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "bucket": p.bucket,
        "bucket_start": datetime.fromtimestamp(p.bucket, tz).isoformat(),
        "group": p.group,
        "requests": p.requests,
        "errors": p.errors,
        "input_tokens": p.input_tokens,
        "cached_input_tokens": p.cached_input_tokens,
        "cache_write_tokens": p.cache_write_tokens,
        "output_tokens": p.output_tokens,
        "reasoning_tokens": p.reasoning_tokens,
        "cost_usd": format_usd(p.cost),
        "revenue_usd": format_usd(p.revenue),
        "margin_usd": format_usd(p.margin),
        "saved_usd": format_usd(p.saved),  # what the response cache saved
        "cache_misses": p.cache_misses,
        "latency_ms_sum": p.latency_ms_sum,
        "upstream_ms_sum": p.upstream_ms_sum,
        "latency_buckets": list(p.latency_buckets),
    }


def top_json(top: TopSpenders) -> dict[str, Any]:
    return {
        "object": "top_spenders",
        "by": top.by,
        "start": top.start,
        "end": top.end,
        "total_usd": format_usd(top.total),
        "tenants": top.tenants,
        "data": [
            {"tenant": s.tenant, "amount_usd": format_usd(s.amount),
             "share_percent": s.share_percent, "requests": s.requests,
             "cost_usd": format_usd(s.cost), "revenue_usd": format_usd(s.revenue)}
            for s in top.data
        ],
    }  # fmt: skip


class ReportRoutes:
    """The handlers of ``/series`` and ``/top-spenders``."""

    def __init__(self, services: Services, tenancy: Tenancy) -> None:
        self.reports = Reports(services.store)
        self.services = services
        self.tenancy = tenancy

    async def series(
        self,
        start: str | None = None,
        end: str | None = None,
        bucket: Bucket = "day",
        tz: Annotated[str, Query(min_length=1, max_length=64)] = "UTC",
        group_by: Dimension | None = None,
        tenant_id: TenantIdFilter = None,
        key_id: Name = None,
        model: Name = None,
        feature: Name = None,
        status: Name = None,
    ) -> dict[str, Any]:
        """Sums of the ledger over ``[start, end)`` (by request start) per bucket and group."""
        lo, hi = _range(start, end)
        if hi - lo > MAX_RANGE_S.get(bucket, float("inf")):
            days = MAX_RANGE_S[bucket] // 86_400
            raise InvalidRequest(
                f"A series of {bucket} buckets covers at most {days} days.", param="end"
            )
        query = SeriesQuery(lo, hi, bucket, tz, group_by, tenant_id, key_id, model, feature,
                            status)  # fmt: skip
        found = await self.reports.series(query)  # checks the zone, answering 400 if unknown
        zone = ZoneInfo(tz)
        return {
            "object": "series", "start": lo, "end": hi, "bucket": bucket, "tz": tz,
            "group_by": group_by, "latency_bounds_ms": list(LATENCY_BOUNDS_MS),
            "data": [point_json(p, zone) for p in found],
        }  # fmt: skip

    async def top_spenders(
        self,
        start: str | None = None,
        end: str | None = None,
        by: Literal["cost", "revenue"] = "cost",
        n: Annotated[int | None, Query(ge=1, le=100_000)] = None,
        top_percent: Annotated[float | None, Query(gt=0, le=100)] = None,
        month: Month | None = None,
        top: Annotated[int | None, Query(ge=1, le=100_000)] = None,
        percent: Annotated[float | None, Query(gt=0, le=100)] = None,
    ) -> dict[str, Any]:
        """The top N (or top X%) tenants by cost or revenue in ``[start, end)``, each with
        its share of every tenant's total (an exact percentage). With ``month`` (a UTC
        month, instead of ``start`` and ``end``): every tenant of the month ranked by revenue
        (plan fee plus usage, as ``/margins``) and by cost, in ``by_revenue`` and ``by_cost``
        (``data`` is the ranking ``by`` names). ``top`` and ``percent`` are the names of
        ``n`` and ``top_percent`` too."""
        if (n is not None and top is not None) or (top_percent is not None and percent is not None):
            raise InvalidRequest("Give each of 'n'/'top' and 'top_percent'/'percent' once.",
                                 param="top")  # fmt: skip
        n, top_percent = top if n is None else n, percent if top_percent is None else top_percent
        if month is not None:
            return await self._month_top(month, start, end, by, n, top_percent)
        lo, hi = _range(start, end)
        if n is None and top_percent is None:
            n = 10
        return top_json(await self.reports.top_spenders(lo, hi, by, n, top_percent))

    async def _month_top(
        self, month: str, start: str | None, end: str | None, by: str, n: int | None,
        top_percent: float | None,
    ) -> dict[str, Any]:  # fmt: skip
        if start is not None or end is not None:
            raise InvalidRequest("Give 'month', or 'start' and 'end', not both.", param="month")
        lo, hi = past_month(month, self.tenancy.now())
        plans = self.services.settings.file.plans
        default_plan = self.services.settings.file.default_plan or "default"
        found = await month_top_spenders(self.services.store, plans, default_plan, month, n,
                                         top_percent)  # fmt: skip
        ranked = found["by_revenue" if by == "revenue" else "by_cost"]
        return {**found, "by": by, "start": lo, "end": hi, "total_usd": ranked["total_usd"],
                "tenants": ranked["tenants"], "data": ranked["data"]}  # fmt: skip
