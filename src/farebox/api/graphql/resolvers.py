"""What each query reads, for a tenant given by the schema's resolver: the admin's argument,
or the tenant key's own tenant from the context. The admin API's handlers are reused where
they exist, so a GraphQL answer holds what the REST answer holds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC

from farebox.api.admin.anomaly import AnomalyRoutes
from farebox.api.admin.budgets import BudgetRoutes
from farebox.api.admin.cache import cache_stats, every_tenant, period
from farebox.api.admin.requests import request_log, request_query
from farebox.api.graphql import convert, limits
from farebox.api.graphql import types as t
from farebox.api.graphql.context import GraphContext
from farebox.api.graphql.revenue import month_arg
from farebox.api.graphql.series import SeriesAsk, series
from farebox.api.graphql.timing import moment, zone
from farebox.billing.margins import month_window
from farebox.errors import InvalidRequest
from farebox.observe.reports import Reports


async def series_points(
    ctx: GraphContext,
    tenant: str | None,
    span: tuple[str, str],
    bucket: t.Bucket,
    tz: str,
    group_by: t.GroupBy | None,
    tag: str | None,
    filters: t.SeriesFilter | None,
) -> list[t.SeriesPoint]:
    where = zone(tz)
    start, end = moment(span[0], "start", where), moment(span[1], "end", where)
    ask = SeriesAsk(start, end, bucket.value, where, tz, group_by.value if group_by else None,
                    tag, filters)  # fmt: skip
    return [convert.point(p, where) for p in await series(ctx, tenant, ask)]


async def budgets(ctx: GraphContext, tenant: str) -> list[t.Budget]:
    """As ``GET /admin/v1/tenants/{id}/budgets``, by its own handler."""
    listed = await BudgetRoutes(ctx.services, ctx.tenancy).tenant_budgets(tenant)
    return [convert.budget(b) for b in listed["data"]]


async def anomalies(
    ctx: GraphContext, tenant: str | None, status: t.IncidentStatus | None
) -> list[t.Anomaly]:
    """As ``GET /admin/v1/anomalies``, by its own handler."""
    routes = AnomalyRoutes(ctx.watch, ctx.services.store)
    listed = await routes.anomalies(tenant, status.value if status else None)
    return [convert.anomaly(a) for a in listed["data"]]


def deployments(ctx: GraphContext) -> list[t.Deployment]:
    """As ``GET /admin/v1/deployments``."""
    return [convert.deployment(d) for d in ctx.services.gateway.deployments()]


async def tenants(ctx: GraphContext, tenant: str | None) -> list[t.Tenant]:
    if tenant is not None:
        return [convert.tenant(await ctx.tenancy.tenant(tenant))]
    return [convert.tenant(x) for x in await ctx.services.store.list_tenants()]


async def keys(ctx: GraphContext, tenant: str | None) -> list[t.Key]:
    """Tenant keys (and, for the admin listing every tenant, service keys): never a secret."""
    if tenant is not None:
        await ctx.tenancy.tenant(tenant)  # 'not found' for an unknown tenant, as REST says
        listed = await ctx.services.store.list_keys(tenant, "tenant")
    else:
        listed = [k for k in await ctx.services.store.list_keys(None) if k.kind != "admin"]
    return [convert.key(k) for k in listed]


async def requests(
    ctx: GraphContext,
    tenant: str | None,
    filters: t.RequestFilter | None,
    first: int,
    after: str | None,
) -> t.RequestPage:
    """As ``GET /admin/v1/requests`` (its checks of each filter, its rows): one page, newest
    first; ``tenant`` None only for the admin (every tenant)."""
    if not 1 <= first <= limits.MAX_PAGE:
        raise InvalidRequest(f"'first' must be between 1 and {limits.MAX_PAGE}.", param="first")
    f = filters or t.RequestFilter()
    values = {"start": f.start, "end": f.end, "status": f.status, "key": f.key, "user": f.user,
              "feature": f.feature, "model": f.model, "cache": f.cache, "cursor": after,
              "limit": first}  # fmt: skip
    query = request_query(values, tenant)  # None: every tenant (no "tenant" in values)
    if f.tag is not None:  # a name may hold ':', so not through the URL form 'name:value'
        query = replace(query, tag=(f.tag.name, f.tag.value))
    page = await request_log(ctx.reports(), query)
    rows = [convert.request(row) for row in page["data"]]
    return t.RequestPage(nodes=rows, next_cursor=page["next_cursor"])


async def top_spenders(
    ctx: GraphContext,
    span: tuple[str | None, str | None, str | None],
    by: t.RankBy,
    n: int | None,
    top_percent: float | None,
) -> t.TopSpenders:
    """As ``GET /admin/v1/top-spenders``, by the same report service: tenants ranked by cost
    or revenue over ``[start, end)`` (UTC unless an offset is given) or a UTC ``month``, ties
    by tenant id, each with its exact share of every tenant's total. Neither ``n`` nor
    ``topPercent``: 10."""
    start, end = _span(ctx, *span)
    if end <= start:
        raise InvalidRequest("'end' must be after 'start'.", param="end")
    if n is None and top_percent is None:
        n = 10
    if n is not None and not 1 <= n <= limits.MAX_TOP:
        raise InvalidRequest(f"'n' must be between 1 and {limits.MAX_TOP}.", param="n")
    top = await Reports(ctx.reports()).top_spenders(start, end, by.value, n, top_percent)
    tenants = await ctx.services.store.list_tenants()
    plans = {x.id: ctx.services.gateway.plan_name(x) for x in tenants}
    return convert.top(top, plans)


def _span(
    ctx: GraphContext, start: str | None, end: str | None, month: str | None
) -> tuple[float, float]:
    """``[start, end)``, or the UTC ``month`` (``2026-11``): one or the other."""
    if month is not None:
        if start is not None or end is not None:
            raise InvalidRequest("Give 'month' or 'start' and 'end', not both.", param="month")
        return month_window(month_arg(ctx, month))
    if start is None or end is None:
        missing = "start" if start is None else "end"
        raise InvalidRequest(f"'{missing}' is required (or give 'month').", param=missing)
    return moment(start, "start", UTC), moment(end, "end", UTC)


async def cache(
    ctx: GraphContext, tenant: str, since: str | None, until: str | None
) -> t.CacheStats:
    """As ``GET /admin/v1/tenants/{id}/cache``: the same period, the same numbers."""
    span = period(since, until, ctx.tenancy.now())
    await ctx.tenancy.tenant(tenant)  # 'not found' for an unknown tenant, as REST says
    found = await cache_stats(ctx.reports(), ctx.services.cache, tenant, span)
    return convert.cache_stats(found)


async def caches(ctx: GraphContext, since: str | None, until: str | None) -> list[t.CacheStats]:
    """As ``GET /admin/v1/cache``: every tenant with cache lookups or entries."""
    span = period(since, until, ctx.tenancy.now())
    tenants = [x.id for x in await ctx.tenancy.list_tenants()]
    rows = await every_tenant(ctx.reports(), ctx.services.cache, tenants, span)
    return [convert.cache_stats(r) for r in rows]
