"""The invoice preview of one tenant's UTC month: its lines, in exact money, from the ledger's
per-tenant rollups (one ``series`` of the month, grouped by status: a few rows whatever the
traffic), never the month's raw entries.

The total is the plan's ``monthly_fee_usd`` (for a month the tenant existed in, as the margins
count it) plus the month's per-request revenue, exactly: the sum the ledger (and so the
billing sinks) holds. The lines split that usage revenue by the tenant's plan (its current
one):

- ``tiered``: the included allowance used (free), then each tier reached, from the month's
  usage in the plan's metric (``farebox.core.tiers``: the floored cumulative charge, so the
  tiers' amounts add up to T(usage), which the requests' revenue sums to);
- ``per_request``: the per-token part (its prices on the month's token sums) and the
  per-request charges (the rest);
- ``markup`` / ``resale``: token usage charges;
- cache hits (status ``cache_hit``) on a line of their own, whatever the plan.

Usage the plan's lines do not explain (revenue earned under another pricing earlier in the
month, before a plan change) is shown as ``other_usage``, so the lines always add up to the
total. A prepaid plan (``pricing.credits``) also shows the credits the month burned (its
revenue times ``per_usd``), outside the total: they paid for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from farebox.billing.margins import past_month
from farebox.config.pricing import PerRequestPricing
from farebox.config.settings import PlanConfig
from farebox.config.tiers import schedule
from farebox.core.credits import CreditRate
from farebox.core.money import format_usd, parse_usd
from farebox.core.pricing import Price, cost
from farebox.core.records import SeriesPoint, SeriesQuery
from farebox.core.tiers import CACHE_HIT, TierSchedule
from farebox.core.usage import Usage
from farebox.errors import NotFound
from farebox.stores.base import AccountStore, ReportStore


class InvoiceStore(AccountStore, ReportStore, Protocol):
    """What the invoice reads: the tenant, and its month's rollups."""


@dataclass(frozen=True, slots=True)
class Line:
    kind: str
    description: str
    amount: int  # pico-USD
    quantity: str | None = None
    unit: str | None = None
    counted: bool = True  # part of the total (credits burned are not: they paid for it)

    def json(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": self.description, "quantity": self.quantity,
                "unit": self.unit, "amount_usd": format_usd(self.amount),
                "counted": self.counted}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sums:
    """The month's sums, split into cache hits and everything else (``usage``)."""

    requests: int = 0
    served: int = 0  # status ``ok``
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost: int = 0
    revenue: int = 0
    hits: int = 0
    hit_revenue: int = 0

    @classmethod
    def of(cls, points: list[SeriesPoint]) -> Sums:
        usage = [p for p in points if p.group != CACHE_HIT]
        hits = [p for p in points if p.group == CACHE_HIT]
        return cls(
            requests=sum(p.requests for p in usage),
            served=sum(p.requests for p in usage if p.group == "ok"),
            input_tokens=sum(p.input_tokens for p in usage),
            cached_input_tokens=sum(p.cached_input_tokens for p in usage),
            output_tokens=sum(p.output_tokens for p in usage),
            cost=sum(p.cost for p in usage),
            revenue=sum(p.revenue for p in usage),
            hits=sum(p.requests for p in hits),
            hit_revenue=sum(p.revenue for p in hits),
        )

    def units(self, metric: str) -> int:
        if metric == "tokens":
            return self.input_tokens + self.output_tokens
        return self.served if metric == "requests" else self.cost


async def invoice(
    store: InvoiceStore, plans: Mapping[str, PlanConfig], default_plan: str, tenant_id: str,
    month: str, clock: Callable[[], float],
) -> dict[str, Any]:  # fmt: skip
    """The invoice preview of ``tenant_id`` for ``month`` (404 for an unknown tenant)."""
    start, end = past_month(month, clock())
    tenant = await store.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"Tenant {tenant_id!r} not found.", code="tenant_not_found")
    plan_name = tenant.plan if tenant.plan in plans else default_plan
    plan = plans.get(plan_name)
    points = await store.series(
        SeriesQuery(start, end, bucket="all", group_by="status", tenant_id=tenant_id)
    )
    sums = Sums.of(points)
    fee = parse_usd(plan.pricing.monthly_fee_usd) if plan and tenant.created_at < end else 0
    lines = [Line("monthly_fee", f"{plan_name} plan, monthly fee", fee)]
    lines += usage_lines(plan_name, plan, sums)
    if sums.hits or sums.hit_revenue:
        lines.append(Line("cache_hit_charges", "cache hits", sums.hit_revenue, str(sums.hits),
                          "requests"))  # fmt: skip
    total = fee + sums.revenue + sums.hit_revenue
    assert sum(line.amount for line in lines if line.counted) == total
    credits = None
    if plan is not None and plan.pricing.credits is not None:
        rate = CreditRate.of(plan.pricing.credits.per_usd)
        burned = sums.revenue + sums.hit_revenue
        credits = rate.credits(burned)
        text = "credits burned (prepaid: not in the total)"
        lines.append(Line("credits_burned", text, burned, credits, "credits", counted=False))
    return {
        "object": "invoice", "tenant": tenant_id, "plan": plan_name, "month": month,
        "requests": sums.requests + sums.hits, "lines": [line.json() for line in lines],
        "fee_usd": format_usd(fee), "usage_usd": format_usd(sums.revenue + sums.hit_revenue),
        "total_usd": format_usd(total), "credits_burned": credits,
    }  # fmt: skip


def usage_lines(name: str, plan: PlanConfig | None, sums: Sums) -> list[Line]:
    """The month's usage revenue (cache hits aside) as the plan's pricing model splits it;
    what it does not explain goes on an ``other_usage`` line."""
    pricing = plan.pricing if plan is not None else None
    lines: list[Line] = []
    if pricing is not None and pricing.tiered is not None:
        lines = tier_lines(schedule(name, pricing.tiered), sums)
    elif pricing is not None and pricing.per_request is not None:
        price = token_part(name, pricing.per_request)
        tokens = 0
        if price is not None:
            usage = Usage(input_tokens=sums.input_tokens,
                          cached_input_tokens=sums.cached_input_tokens,
                          output_tokens=sums.output_tokens)  # fmt: skip
            tokens = cost(usage, price)
            lines.append(Line("token_usage_charges", "tokens (the per-token part)", tokens,
                              str(sums.input_tokens + sums.output_tokens), "tokens"))  # fmt: skip
        lines.append(Line("per_request_charges", "per-request charges", sums.revenue - tokens,
                          str(sums.served), "requests"))  # fmt: skip
    else:
        lines.append(Line("token_usage_charges", "token usage", sums.revenue,
                          str(sums.input_tokens + sums.output_tokens), "tokens"))  # fmt: skip
    explained = sum(line.amount for line in lines)
    if explained != sums.revenue:
        lines.append(Line("other_usage", "usage under another pricing this month",
                          sums.revenue - explained))  # fmt: skip
    return lines


def quantity(metric: str, units: int) -> str:
    return format_usd(units) if metric == "usd" else str(units)


def tier_lines(s: TierSchedule, sums: Sums) -> list[Line]:
    """The allowance used, then each tier (its units, its price, its amount)."""
    used = sums.units(s.metric)
    unit = "USD of usage" if s.metric == "usd" else s.metric
    per = {"tokens": "per 1M tokens", "requests": "per request", "usd": "per USD of usage"}
    out = []
    for part in s.parts(used):
        if part.tier < 0:
            text = f"included allowance: {quantity(s.metric, part.units)} of " + (
                f"{quantity(s.metric, s.included)} {unit} used"
            )
            out.append(Line("included_allowance", text, 0, quantity(s.metric, part.units), unit))
            continue
        upto = "and above" if part.end is None else f"to {quantity(s.metric, part.end)}"
        text = (f"overage tier {part.tier + 1}: {quantity(s.metric, part.start)} {upto} "
                f"{unit} at {format_usd(part.price)} {per[s.metric]}")  # fmt: skip
        out.append(Line("overage_tier", text, part.amount, quantity(s.metric, part.units), unit))
    return out


def token_part(plan: str, cfg: PerRequestPricing) -> Price | None:
    """A per-request plan's per-token part, or None."""
    if cfg.tokens is None:
        return None
    fields = {k: v for k, v in cfg.tokens.model_dump().items() if v is not None}
    return Price.from_per_million(fields, where=f"plans.{plan}.pricing.per_request.tokens")
