"""Plan profitability for a month (issue [13], revenue intelligence): for each plan, the
distribution of its tenants' margins (p10, p50, p90), the share of its tenants with a positive
margin, and whether the tenant at the 90th percentile of usage is profitable.

Margins are ``billing.margins``' (plan fee plus usage revenue, less provider cost, exact
pico-USD, from the rollups). Percentiles are nearest-rank: the p-th percentile of N values,
sorted ascending, is the value at rank ceil(p * N / 100) (counting from 1), always one of
the values, never an interpolation. Usage is the provider cost a tenant caused; ties go to
the tenant id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from farebox.billing.margins import MarginStore, TenantMonth, tenant_months
from farebox.config.settings import PlanConfig
from farebox.core.money import format_usd

PERCENTILES = (10, 50, 90)


def rank(p: int, n: int) -> int:
    """The 0-based index of the nearest-rank ``p``-th percentile among ``n`` sorted values."""
    return max(-(-p * n // 100), 1) - 1


def signed_usd(pico: int) -> str:
    return format_usd(pico) if pico >= 0 else "-" + format_usd(-pico)


def share(part: int, whole: int) -> str | None:
    """``part / whole`` as a decimal string to 4 places, rounded half up; None for 0/0."""
    if whole == 0:
        return None
    scaled = (Fraction(part, whole) * 10_000 * 2 + 1) // 2
    whole_part, frac = divmod(int(scaled), 10_000)
    return f"{whole_part}.{frac:04d}"


def plan_line(plan: str, months: Sequence[TenantMonth]) -> dict[str, Any]:
    """One plan's profitability from its tenants' months (at least one)."""
    margins = sorted(m.margin for m in months)
    n = len(margins)
    by_usage = sorted(months, key=lambda m: (m.cost, m.tenant))
    heavy = by_usage[rank(90, n)]
    return {
        "plan": plan,
        "tenants": n,
        "margin_p10_usd": signed_usd(margins[rank(10, n)]),
        "margin_p50_usd": signed_usd(margins[rank(50, n)]),
        "margin_p90_usd": signed_usd(margins[rank(90, n)]),
        "profitable_share": share(sum(1 for m in margins if m > 0), n),
        "p90_usage_tenant": {
            "tenant": heavy.tenant,
            "cost_usd": format_usd(heavy.cost),
            "revenue_usd": format_usd(heavy.revenue),
            "margin_usd": signed_usd(heavy.margin),
            "profitable": heavy.margin > 0,
        },
        "revenue_usd": format_usd(sum(m.revenue for m in months)),
        "cost_usd": format_usd(sum(m.cost for m in months)),
        "margin_usd": signed_usd(sum(m.margin for m in months)),
    }


async def plan_profitability(
    store: MarginStore, plans: Mapping[str, PlanConfig], default_plan: str, month: str
) -> dict[str, Any]:
    """Every plan with tenants in ``month``, by name."""
    by_plan: dict[str, list[TenantMonth]] = {}
    for m in await tenant_months(store, plans, default_plan, month):
        by_plan.setdefault(m.plan, []).append(m)
    data = [plan_line(plan, by_plan[plan]) for plan in sorted(by_plan)]
    return {"object": "plan_profitability", "month": month, "data": data}
