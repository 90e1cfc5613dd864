"""Margin per tenant and month: what the platform earns (plan fee plus usage revenue) against
what the providers cost, from the ledger, in exact money.

The sums come from ``UsageStore.usage`` grouped by tenant, which every store answers from the
ledger's rollups (a few rows per tenant, never the month's entries; on SQLite on the reports'
own connection), so a month's margins stay fast on millions of entries.

Months are calendar months in UTC, and an entry counts in the month its request started in.
A tenant pays its plan's whole ``monthly_fee_usd`` for any month it existed in (no
proration).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Protocol

from farebox.config.settings import PlanConfig
from farebox.core.money import format_usd, parse_usd
from farebox.core.records import Tenant, UsageQuery
from farebox.errors import InvalidRequest
from farebox.stores.base import AccountStore, UsageStore


class MarginStore(AccountStore, UsageStore, Protocol):
    """What margins read: the tenants, and their usage."""


def month_window(month: str) -> tuple[float, float]:
    """``2026-11`` -> [start, end) in unix seconds (UTC)."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest(
            f"'month' must look like 2026-11 (got {month!r}).", param="month"
        ) from None
    if start.year >= 9999:  # its end is beyond what a date can say (and surely a mistake)
        raise InvalidRequest(f"'month' must be before 9999 (got {month!r}).", param="month")
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.timestamp(), end.timestamp()


def month_of(now: float) -> str:
    """The UTC month (``2026-11``) that ``now`` falls in."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def past_month(month: str, now: float) -> tuple[float, float]:
    """``month``'s [start, end), as ``month_window``; a month that has not started yet is a
    400 naming the parameter (the reports answer past and current months only)."""
    start, end = month_window(month)
    if start > now:
        raise InvalidRequest(
            f"'month' {month} is in the future (the current UTC month is {month_of(now)}).",
            param="month",
        )
    return start, end


def percent(margin: int, revenue: int) -> str | None:
    """Margin as a percentage of revenue, to two decimals (half-even), exactly computed."""
    if revenue == 0:
        return None
    value = Fraction(margin * 100, revenue)
    cents = round(value * 100)  # Fraction rounds half to even
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


@dataclass(frozen=True, slots=True)
class TenantMonth:
    """One tenant's month, in pico-USD: its plan fee, usage revenue and provider cost."""

    tenant: str
    plan: str
    fee: int
    usage: int
    cost: int
    requests: int

    @property
    def revenue(self) -> int:
        return self.fee + self.usage

    @property
    def margin(self) -> int:
        return self.revenue - self.cost


async def tenant_months(
    store: MarginStore, plans: Mapping[str, PlanConfig], default_plan: str, month: str,
    tenant_id: str | None = None,
) -> list[TenantMonth]:  # fmt: skip
    """Every tenant that existed in ``month`` (by id), with its month's exact money."""
    start, end = month_window(month)
    rows = {r.group: r for r in await store.usage(UsageQuery(tenant_id, start, end, "tenant"))}
    tenants = [t for t in await store.list_tenants() if tenant_id is None or t.id == tenant_id]
    return months_of(tenants, rows, plans, default_plan, end)


class Sums(Protocol):
    """A tenant's sums for the month (a ``UsageRow`` or a ``SeriesPoint``)."""

    @property
    def requests(self) -> int: ...
    @property
    def cost(self) -> int: ...
    @property
    def revenue(self) -> int: ...


def months_of(
    tenants: Iterable[Tenant], rows: Mapping[str | None, Sums], plans: Mapping[str, PlanConfig],
    default_plan: str, end: float,
) -> list[TenantMonth]:  # fmt: skip
    """``tenant_months`` from the month's sums per tenant (``rows``, by tenant id)."""
    out = []
    for tenant in sorted(tenants, key=lambda t: t.id):
        if tenant.created_at >= end:
            continue
        plan = plans.get(tenant.plan) or plans.get(default_plan)
        fee = parse_usd(plan.pricing.monthly_fee_usd) if plan else 0
        row = rows.get(tenant.id)
        usage, cost = (row.revenue, row.cost) if row else (0, 0)
        out.append(
            TenantMonth(tenant.id, tenant.plan, fee, usage, cost, row.requests if row else 0)
        )
    return out


async def margins(
    store: MarginStore, plans: Mapping[str, PlanConfig], default_plan: str, month: str,
    tenant_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    months = await tenant_months(store, plans, default_plan, month, tenant_id)
    out = [_line(m.tenant, m.plan, m.fee, m.usage, m.cost, m.requests) for m in months]
    fee, usage = sum(m.fee for m in months), sum(m.usage for m in months)
    cost = sum(m.cost for m in months)
    total = _line(None, None, fee, usage, cost, sum(m.requests for m in months))
    return {"object": "margins", "month": month, "data": out, "total": total}


async def workspace_margins(store: MarginStore, month: str, tenant_id: str) -> list[dict[str, Any]]:
    """A tenant's month by workspace (issue 14): the usage revenue, cost and margin of each
    workspace's requests (the plan fee is the tenant's, not any workspace's; entries written
    before workspaces, or by a service key, have none: ``workspace`` null)."""
    start, end = month_window(month)
    rows = await store.usage(UsageQuery(tenant_id, start, end, "workspace"))
    out = []
    for row in rows:
        line = _line(None, None, 0, row.revenue, row.cost, row.requests)
        del line["plan_fee_usd"]
        out.append({"workspace": row.group, **line})
    return out


def _line(tenant: str | None, plan: str | None, fee: int, usage: int, cost: int,
          requests: int) -> dict[str, Any]:  # fmt: skip
    revenue = fee + usage
    line: dict[str, Any] = {} if tenant is None else {"tenant": tenant, "plan": plan}
    line.update(
        requests=requests,
        plan_fee_usd=format_usd(fee),
        usage_revenue_usd=format_usd(usage),
        revenue_usd=format_usd(revenue),
        cost_usd=format_usd(cost),
        margin_usd=format_usd(revenue - cost)
        if revenue >= cost
        else "-" + format_usd(cost - revenue),
        margin_percent=percent(revenue - cost, revenue),
    )
    return line
