"""What-if repricing (issue [13], revenue intelligence): a month of one plan's tenants replayed
under a proposed price, each tenant's revenue and margin before and after. Nothing changes.

The replay reads the rollups (one series over the month grouped by tenant, plus one of the
served requests for a per-request price), never the month's entries. Before is what the
ledger holds (``billing.margins``: plan fee plus usage revenue); after is the plan fee plus the
usage at the proposed price:

- ``markup``: the tenant's month of provider cost times the markup, rounded once, half away
  from zero, to the pico-USD: **computed on the month's sum**, which is what an invoice at the
  new price would charge if the markup applied to the month. Per-entry rounding (what the
  gateway does for each request) can differ from it by at most one pico-USD per entry.
- ``resale``: USD per 1M input, output and (optionally) cached input tokens, the rest of the
  input (cache writes included) at the input price. Linear in the tokens, so the month's sums
  give exactly what each entry would have.
- ``per_request``: a price per served request (status ``ok``): the new usage revenue is the
  price times the served requests (the plan's current usage revenue is replaced).

Cache hits are repriced from their own sums (a hit's cost is zero, its tokens are counted), so
under a markup a hit earns nothing: the replay prices usage, not the cache's ``cache_hit``
policy.

The plan fee stays the plan's (``monthly_fee_usd``), unless ``monthly_fee_usd`` is proposed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from farebox.billing.margins import MarginStore, months_of, past_month, percent
from farebox.billing.profitability import signed_usd
from farebox.config.settings import PlanConfig
from farebox.core.money import (
    PICO_PER_USD,
    MoneyFormatError,
    format_usd,
    mul_ratio,
    parse_usd,
    price_per_token,
)
from farebox.core.records import SeriesPoint, SeriesQuery
from farebox.errors import InvalidRequest
from farebox.stores.base import ReportStore


class RepriceStore(MarginStore, ReportStore, Protocol):
    """What a what-if reads: the tenants, their month's usage and the rollups' token sums."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposed price: exactly one of a markup (a ratio), a resale price (pico-USD per
    token) or a price per served request (pico-USD); and optionally a new plan fee."""

    markup: tuple[int, int] | None = None
    resale: tuple[int, int, int | None] | None = None  # input, output, cached input
    per_request: int | None = None
    fee: int | None = None

    def usage(self, point: SeriesPoint | None, served: int) -> int:
        """A tenant's month of usage revenue at this price, from its sums."""
        if point is None:
            return 0
        if self.markup is not None:
            return mul_ratio(point.cost, *self.markup)
        if self.resale is not None:
            base, output, cached = self.resale
            rest = max(point.input_tokens - point.cached_input_tokens, 0)
            read = point.cached_input_tokens * (base if cached is None else cached)
            return rest * base + read + point.output_tokens * output
        assert self.per_request is not None
        return self.per_request * served


def proposal(body: Mapping[str, Any]) -> Proposal:
    """From the request's ``markup``, ``resale`` ({input, output, cached_input}: USD per 1M
    tokens), ``per_request`` (USD) and ``monthly_fee_usd``: decimal strings."""
    given = [n for n in ("markup", "resale", "per_request") if body.get(n) is not None]
    if len(given) != 1:
        raise InvalidRequest(
            "Propose exactly one price: 'markup', 'resale' or 'per_request'.", param="markup"
        )
    try:
        fee = body.get("monthly_fee_usd")
        fee_pico = _nonnegative(parse_usd(fee, field="monthly_fee_usd"), "monthly_fee_usd") \
            if fee is not None else None  # fmt: skip
        if body.get("markup") is not None:
            ratio = Fraction(parse_usd(body["markup"], field="markup"), PICO_PER_USD)
            if ratio < 0:
                raise InvalidRequest("'markup' cannot be negative.", param="markup")
            return Proposal(markup=(ratio.numerator, ratio.denominator), fee=fee_pico)
        if body.get("resale") is not None:
            r = body["resale"]
            cached = r.get("cached_input")
            return Proposal(resale=(
                price_per_token(r.get("input", "0"), field="resale.input"),
                price_per_token(r.get("output", "0"), field="resale.output"),
                None if cached is None else price_per_token(cached, field="resale.cached_input"),
            ), fee=fee_pico)  # fmt: skip
        price = parse_usd(body["per_request"], field="per_request")
        return Proposal(per_request=_nonnegative(price, "per_request"), fee=fee_pico)
    except MoneyFormatError as exc:
        raise InvalidRequest(str(exc), param=str(exc).split(":", 1)[0]) from None


def _nonnegative(pico: int, name: str) -> int:
    if pico < 0:
        raise InvalidRequest(f"'{name}' cannot be negative.", param=name)
    return pico


def _money(before: int, after: int, cost: int) -> dict[str, Any]:
    return {
        "revenue_before_usd": format_usd(before),
        "revenue_after_usd": format_usd(after),
        "revenue_change_usd": signed_usd(after - before),
        "margin_before_usd": signed_usd(before - cost),
        "margin_after_usd": signed_usd(after - cost),
        "margin_before_percent": percent(before - cost, before),
        "margin_after_percent": percent(after - cost, after),
    }


async def reprice(
    store: RepriceStore, plans: Mapping[str, PlanConfig], default_plan: str, month: str,
    plan: str, body: Mapping[str, Any], now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The month of ``plan``'s tenants at the price ``body`` proposes, before and after."""
    if plan not in plans:
        known = ", ".join(sorted(plans)) or "none"
        raise InvalidRequest(f"Unknown plan {plan!r}; configured plans: {known}.", param="plan")
    price = proposal(body)
    start, end = past_month(month, time.time() if now is None else now)
    query = SeriesQuery(start, end, bucket="all", group_by="tenant")
    sums = {p.group: p for p in await store.series(query)}  # one read gives before and after
    tenants = [t for t in await store.list_tenants() if t.plan == plan]
    months = months_of(tenants, sums, plans, default_plan, end)
    served: dict[str | None, int] = {}
    if price.per_request is not None:
        ok = SeriesQuery(start, end, bucket="all", group_by="tenant", status="ok")
        served = {p.group: p.requests for p in await store.series(ok)}
    data, totals = [], [0, 0, 0]
    for m in months:
        fee = m.fee if price.fee is None else price.fee
        after = fee + price.usage(sums.get(m.tenant), served.get(m.tenant, 0))
        data.append({"tenant": m.tenant, "requests": m.requests, "cost_usd": format_usd(m.cost),
                     **_money(m.revenue, after, m.cost)})  # fmt: skip
        totals = [totals[0] + m.revenue, totals[1] + after, totals[2] + m.cost]
    return {
        "object": "reprice",
        "month": month,
        "plan": plan,
        "proposed": {k: v for k, v in body.items() if v is not None},
        "applied": False,  # a what-if: nothing was changed
        "data": data,
        "total": {
            "tenants": len(data),
            "cost_usd": format_usd(totals[2]),
            **_money(totals[0], totals[1], totals[2]),
        },  # fmt: skip
    }
