"""Series and top spenders over the rollups, for one tenant (forced) or all (the admin).

Grouped by tenant, key, model, feature or status, a series is the store's rollup series.
Grouped by plan, it is the series by tenant with each tenant mapped to its current plan and
summed. Grouped by user or by a metadata tag (which rollups do not keep), it is read from the
request log, page by page, summing as it goes: memory is bounded by the groups and buckets,
never the entries, and the range may cover at most ``RANGE_CAP_S["scan"]`` and
``MAX_SCAN`` entries, or the query is refused with a message saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import tzinfo
from typing import Any

import orjson

from farebox.api.graphql import limits
from farebox.api.graphql.context import GraphContext
from farebox.api.graphql.timing import bucket_start
from farebox.api.graphql.types import SeriesFilter
from farebox.core.records import LedgerEntry, RequestQuery, SeriesPoint, SeriesQuery
from farebox.errors import InvalidRequest

SCANNED = frozenset({"user", "tag"})


@dataclass(frozen=True)
class SeriesAsk:
    """A series as asked, checked: times in unix seconds, the zone resolved."""

    start: float
    end: float
    bucket: str
    zone: tzinfo
    tz: str
    group_by: str | None
    tag: str | None
    filters: SeriesFilter | None

    def check(self) -> None:
        if self.end <= self.start:
            raise InvalidRequest("'end' must be after 'start'.", param="end")
        scanned = self.group_by in SCANNED
        cap = limits.RANGE_CAP_S["scan" if scanned else self.bucket]
        if self.end - self.start > cap:
            what = f"grouped by {self.group_by}" if scanned else f"in {self.bucket} buckets"
            raise InvalidRequest(
                f"A series {what} may cover at most {cap // limits.DAY_S} days; "
                "narrow the range or use wider buckets.",
                param="end",
            )
        if (self.group_by == "tag") != (self.tag is not None):
            raise InvalidRequest(
                "Give 'tag' (a metadata name) exactly when grouping by TAG.", param="tag"
            )


def rollup_query(ask: SeriesAsk, tenant: str | None, group_by: str | None) -> SeriesQuery:
    f = ask.filters or SeriesFilter()
    bucket: Any = ask.bucket
    return SeriesQuery(start=ask.start, end=ask.end, bucket=bucket, tz=ask.tz, group_by=group_by,
                       tenant_id=tenant, key_id=f.key, model=f.model, feature=f.feature,
                       status=f.status)  # fmt: skip


async def series(ctx: GraphContext, tenant: str | None, ask: SeriesAsk) -> list[SeriesPoint]:
    ask.check()
    if ask.group_by in SCANNED:
        points = await scanned(ctx, tenant, ask)
    elif ask.group_by == "plan":
        points = await by_plan(ctx, tenant, ask)
    else:
        points = await ctx.reports().series(rollup_query(ask, tenant, ask.group_by))
    if len(points) > limits.MAX_POINTS:
        raise InvalidRequest(
            f"This series has more than {limits.MAX_POINTS} points; narrow the range, use "
            "wider buckets or filter it."
        )
    return points


def add(a: SeriesPoint, b: SeriesPoint) -> SeriesPoint:
    return replace(
        a,
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        input_tokens=a.input_tokens + b.input_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        cost=a.cost + b.cost,
        revenue=a.revenue + b.revenue,
        latency_ms_sum=a.latency_ms_sum + b.latency_ms_sum,
        upstream_ms_sum=a.upstream_ms_sum + b.upstream_ms_sum,
        saved=a.saved + b.saved,
        cache_misses=a.cache_misses + b.cache_misses,
        latency_buckets=(),
    )


def ordered(sums: dict[tuple[float, str | None], SeriesPoint]) -> list[SeriesPoint]:
    """Oldest bucket first, then by group, None last (as ``ReportStore.series``)."""
    return [sums[k] for k in sorted(sums, key=lambda k: (k[0], k[1] is None, k[1] or ""))]


async def by_plan(ctx: GraphContext, tenant: str | None, ask: SeriesAsk) -> list[SeriesPoint]:
    """The series by tenant, each tenant's points summed under its current plan."""
    points = await ctx.reports().series(rollup_query(ask, tenant, "tenant"))
    gateway = ctx.services.gateway
    tenants = (
        [await ctx.tenancy.tenant(tenant)] if tenant else await ctx.services.store.list_tenants()
    )
    plans = {x.id: gateway.plan_name(x) for x in tenants}
    sums: dict[tuple[float, str | None], SeriesPoint] = {}
    for p in points:
        plan = plans.get(p.group or "")
        known = sums.get((p.bucket, plan))
        sums[(p.bucket, plan)] = replace(p, group=plan) if known is None else add(known, p)
    return ordered(sums)


def group_reader(ask: SeriesAsk) -> Callable[[LedgerEntry], str | None]:
    if ask.group_by == "user":
        return lambda e: e.user
    name = ask.tag or ""

    def tag_of(e: LedgerEntry) -> str | None:
        value = e.metadata.get(name)
        if value is None or isinstance(value, str):
            return value
        return orjson.dumps(value).decode()

    return tag_of


def entry_point(e: LedgerEntry, bucket: float, group: str | None) -> SeriesPoint:
    return SeriesPoint(
        bucket=bucket,
        group=group,
        requests=1,
        errors=1 if e.http_status >= 400 else 0,
        input_tokens=e.input_tokens,
        cached_input_tokens=e.cached_input_tokens,
        cache_write_tokens=e.cache_write_5m_tokens + e.cache_write_1h_tokens,
        output_tokens=e.output_tokens,
        reasoning_tokens=e.reasoning_tokens,
        cost=e.cost,
        revenue=e.revenue,
        latency_ms_sum=e.latency_ms,
        upstream_ms_sum=e.upstream_ms,
        saved=e.saved,
        cache_misses=1 if e.cache == "miss" else 0,
    )


async def scanned(ctx: GraphContext, tenant: str | None, ask: SeriesAsk) -> list[SeriesPoint]:
    """A series grouped by user or tag, summed from the request log's pages."""
    f = ask.filters or SeriesFilter()
    query = RequestQuery(tenant_id=tenant, start=ask.start, end=ask.end, status=f.status,
                         key_id=f.key, feature=f.feature, limit=limits.SCAN_PAGE)  # fmt: skip
    group_of = group_reader(ask)
    sums: dict[tuple[float, str | None], SeriesPoint] = {}
    read = 0
    reports = ctx.reports()
    while True:
        page = await reports.requests(query)
        read += len(page.entries)
        if read > limits.MAX_SCAN:
            raise InvalidRequest(
                f"Grouping by {ask.group_by} reads each request, and this range holds more "
                f"than {limits.MAX_SCAN}; narrow the range or filter it."
            )
        for e in page.entries:
            if f.model is not None and e.model_served != f.model:
                continue
            key = (bucket_start(e.started_at, ask.bucket, ask.zone, ask.start), group_of(e))
            known = sums.get(key)
            sums[key] = entry_point(e, *key) if known is None else add(known, entry_point(e, *key))
        if len(sums) > limits.MAX_GROUPS:
            raise InvalidRequest(
                f"This series has more than {limits.MAX_GROUPS} groups and buckets; narrow it."
            )
        if page.next_cursor is None:
            return ordered(sums)
        query = replace(query, cursor=page.next_cursor)
