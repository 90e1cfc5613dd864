"""Top spenders of a UTC month (issue [13], revenue intelligence): the top N (or the top X%)
tenants by revenue and by cost, each with its share of every tenant's total.

Revenue and cost are ``billing.margins``' (a tenant's revenue is its plan's monthly fee plus
its usage revenue; cost is what its requests cost the platform), read from the rollups, and
every tenant that existed in the month is ranked (one without traffic, by its fee). Ranking:
largest first, ties by tenant id. The top X% of N tenants is ceil(X * N / 100) of them (the
top 10% of 5 tenants is 1). A share is ``amount / total`` as a percentage to two decimals,
computed exactly and rounded half-even (``"12.50"``); None when the total is 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from farebox.billing.margins import MarginStore, TenantMonth, percent, tenant_months
from farebox.billing.profitability import signed_usd
from farebox.config.settings import PlanConfig
from farebox.core.money import format_usd
from farebox.errors import InvalidRequest


def how_many(count: int, top: int | None, top_percent: float | None) -> int:
    """How many of ``count`` ranked tenants the top holds (at most one of the two given;
    neither: 10)."""
    if top is not None and top_percent is not None:
        raise InvalidRequest("Give one of 'top' and 'percent', not both.", param="percent")
    if top_percent is not None:
        if not (math.isfinite(top_percent) and 0 < top_percent <= 100):
            raise InvalidRequest("'percent' must be above 0 and at most 100.", param="percent")
        return min(count, math.ceil(Fraction(top_percent) * count / 100))
    top = 10 if top is None else top
    if top < 1:
        raise InvalidRequest("'top' must be at least 1.", param="top")
    return min(top, count)


def ranking(
    months: Sequence[TenantMonth], amount: Callable[[TenantMonth], int], size: int
) -> dict[str, Any]:
    total = sum(amount(m) for m in months)
    ranked = sorted(months, key=lambda m: (-amount(m), m.tenant))[:size]
    return {
        "total_usd": signed_usd(total),
        "tenants": len(months),
        "data": [
            {"rank": i, "tenant": m.tenant, "plan": m.plan, "amount_usd": signed_usd(amount(m)),
             "share_percent": percent(amount(m), total), "requests": m.requests,
             "revenue_usd": format_usd(m.revenue), "cost_usd": format_usd(m.cost),
             "plan_fee_usd": format_usd(m.fee), "usage_revenue_usd": format_usd(m.usage),
             "margin_usd": signed_usd(m.margin)}
            for i, m in enumerate(ranked, 1)
        ],
    }  # fmt: skip


async def top_spenders(
    store: MarginStore, plans: Mapping[str, PlanConfig], default_plan: str, month: str,
    top: int | None = None, top_percent: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The month's top tenants, by revenue and by cost."""
    how_many(0, top, top_percent)  # bad input is refused before anything is read
    months = await tenant_months(store, plans, default_plan, month)
    size = how_many(len(months), top, top_percent)
    return {
        "object": "top_spenders",
        "month": month,
        "top": size,
        "by_revenue": ranking(months, lambda m: m.revenue, size),
        "by_cost": ranking(months, lambda m: m.cost, size),
    }
