"""What the dashboard's pages show, read through the admin API's own handlers.

Every number on a page comes from the same code (and so the same exact decimal strings) as the
admin API answer for the same data: the tenants from ``GET /admin/v1/tenants``, spend and
margin from ``/margins``, budgets from ``/tenants/{id}/budgets``, and so on. The series and
the request log read the reports seam (``ReportStore``) when the store offers it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin.anomaly import AnomalyRoutes
from farebox.api.admin.billing import BillingRoutes, GroupBy
from farebox.api.admin.budgets import BudgetRoutes
from farebox.api.admin.cache import cache_stats, month_span, stats_json
from farebox.api.admin.keys import KeyRoutes
from farebox.api.admin.operations import OperationRoutes
from farebox.api.admin.tenants import TenantRoutes
from farebox.api.context import Services
from farebox.api.dashboard.reports import Reports
from farebox.api.dashboard.revenue import RevenueData
from farebox.billing.exporter import Exporter
from farebox.billing.margins import month_of
from farebox.core.money import parse_usd
from farebox.identity.tenancy import Tenancy

TOP_SPENDERS = 5
TENANTS_PER_PAGE = 50
USAGE_DAYS = 30  # today and the 29 UTC days before it
# by end user: the rollups keep no user, so these read the tenant's entries; a week of them
USER_DAYS = 7
DAY = 86_400
DIMENSIONS: tuple[GroupBy, ...] = ("day", "model", "feature", "user")


def _cost(line: dict[str, Any] | None) -> int:
    return parse_usd(line["cost_usd"]) if line else 0


def share(part: int, whole: int) -> int:
    """``part`` as a whole percentage (0-100) of ``whole``, in integer arithmetic."""
    if whole <= 0 or part <= 0:
        return 0
    return min(100, part * 100 // whole)


def budget_bar(budget: dict[str, Any]) -> dict[str, Any]:
    """A budget object with the used and reserved shares of its limit, for its bar."""
    limit = parse_usd(budget["limit_usd"])
    used = parse_usd(budget["used_usd"])
    reserved = parse_usd(budget["reserved_usd"])
    used_pct = share(used, limit)
    return {**budget, "used_pct": used_pct,
            "reserved_pct": min(100 - used_pct, share(reserved, limit))}  # fmt: skip


class DashboardData:
    """The admin handlers, called directly: the dashboard's one source of numbers."""

    def __init__(
        self,
        services: Services,
        tenancy: Tenancy,
        exporter: Exporter,
        watch: AnomalyWatch,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenants = TenantRoutes(services, tenancy, watch)
        self.keys = KeyRoutes(services, tenancy, watch)
        self.budgets = BudgetRoutes(services, tenancy)
        self.billing = BillingRoutes(services, tenancy, exporter)
        self.ops = OperationRoutes(services, exporter)
        self.anomaly = AnomalyRoutes(watch, services.store)
        self.reports = Reports(services.store)
        self.store = services.store
        self.services = services  # its ``cache`` is read when asked (wired after start-up)
        self.clock = clock
        self.revenue = RevenueData(services, tenancy, self.billing, clock)

    async def overview(self, page: int = 1) -> dict[str, Any]:
        """The admin view: one page of tenants (biggest spenders first), the top spenders,
        anomalies, deployments and the export."""
        month = month_of(self.clock())
        margins = await self.billing.margin_report(month=month)
        incidents = (await self.anomaly.anomalies())["data"]
        open_by_tenant = {i["tenant"] for i in incidents if i["status"] == "open"}
        listed = (await self.tenants.list_tenants())["data"]
        rows = {r["tenant"]: r for r in margins["data"]}
        pages = max(1, -(-len(listed) // TENANTS_PER_PAGE))
        page = min(max(page, 1), pages)
        listed.sort(key=lambda t: (-_cost(rows.get(t["id"])), t["id"]))
        shown = listed[(page - 1) * TENANTS_PER_PAGE : page * TENANTS_PER_PAGE]
        cache = await self._cache_month([t["id"] for t in shown])
        tenants = [
            {**t, "month": rows.get(t["id"]), "anomaly": t["id"] in open_by_tenant,
             "budgets": [budget_bar(b) for b in await self._budgets(t["id"])],
             "cache": cache[t["id"]]}
            for t in shown
        ]  # fmt: skip
        deployments, idle = split_idle((await self.ops.deployments())["data"])
        export = (await self.billing.export_status())["sinks"]
        dead = await self.store.dead_letter_count()
        return {
            "month": month,
            "total": margins["total"],
            "tenants": tenants,
            "tenant_pages": {"page": page, "pages": pages, "count": len(listed)},
            "paused_quietly": [t for t in listed if t["paused"] and t["id"] not in open_by_tenant],
            "top_spenders": top_spenders(margins["data"], margins["total"]),
            "incidents": incidents[:50],
            "paused": {t["id"] for t in listed if t["paused"]},
            "deployments": deployments,
            "idle_deployments": idle,
            "export": export,
            "dead_letters": dead,
        }

    async def _cache_month(self, tenant_ids: list[str]) -> dict[str, dict[str, Any]]:
        """This month's cache traffic of each tenant (as ``GET /tenants/{id}/cache`` says
        it), read in one tally of every tenant; what the caches hold is on each tenant's page."""
        span = month_span(self.clock())
        tallies = {t.tenant_id: t for t in await self.store.cache_tallies(None, *span)}
        return {tid: stats_json(tid, tallies.get(tid), None, span) for tid in tenant_ids}

    async def _budgets(self, tenant_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = (await self.budgets.tenant_budgets(tenant_id))["data"]
        return data

    async def tenant_view(self, tenant_id: str) -> dict[str, Any]:
        """One tenant's own view: usage by day, model, feature and user; budgets; rate limits;
        keys (never a secret: the key list has ids, names and prefixes only); its credits,
        burn and this month's invoice preview.

        The usage covers whole UTC days (today and the ``USAGE_DAYS - 1`` before it), so the
        rollups answer it from the daily table where they can instead of the hourly one and
        the raw entries of a cut hour; the five reports run at once (PostgreSQL answers them
        on separate pool connections)."""
        today = int(self.clock()) // DAY
        since = (today - (USAGE_DAYS - 1)) * DAY
        users_since = (today - (USER_DAYS - 1)) * DAY
        dims: tuple[GroupBy | None, ...] = (*DIMENSIONS, None)
        answers = await asyncio.gather(
            *(self.billing.usage(tenant=tenant_id, group_by=d,
                                 start=str(users_since if d == "user" else since))
              for d in dims)
        )  # fmt: skip
        usage = {dim: answer["data"] for dim, answer in zip(DIMENSIONS, answers, strict=False)}
        total = answers[-1]["data"]
        return {
            "tenant": (await self.tenants.get_tenant(tenant_id)),
            "usage": usage,
            "usage_total": total[0] if total else None,
            "usage_days": USAGE_DAYS,
            "user_days": USER_DAYS,
            "budgets": [budget_bar(b) for b in await self._budgets(tenant_id)],
            "limits": await self.tenants.tenant_limits(tenant_id),
            "api_keys": (await self.keys.list_keys(tenant_id))["data"],
            "cache": await cache_stats(
                self.store, self.services.cache, tenant_id, month_span(self.clock())
            ),
            "revenue": await self.revenue.tenant(tenant_id),
        }


def top_spenders(lines: list[dict[str, Any]], total: dict[str, Any]) -> list[dict[str, Any]]:
    """The month's biggest tenants by provider cost, with their share of the total."""
    whole = parse_usd(total["cost_usd"])
    spending = [line for line in lines if parse_usd(line["cost_usd"]) > 0]
    spending.sort(key=lambda line: (-parse_usd(line["cost_usd"]), line["tenant"]))
    return [
        {**line, "share_pct": share(parse_usd(line["cost_usd"]), whole)}
        for line in spending[:TOP_SPENDERS]
    ]


def split_idle(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deployments that served calls or whose breaker is not closed, and the idle rest."""
    busy = [r for r in rows if r["successes"] or r["failures"] or r["state"] != "closed"]
    return busy, [r for r in rows if r not in busy]
