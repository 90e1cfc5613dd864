"""What a ledger entry is worth on each billing meter, exactly.

Counts are integers; money is an exact decimal string of USD (``format_usd`` of pico-USD), so
a billing engine sums to the ledger's total to the last unit.

The usage meters (``METERS``, a sink's default) are functions of the entry alone. The plan
meters (``PLAN_METERS``, sent only when a sink lists them) need the tenant's plan terms
(``PlanTerms``: the tenant's plan *at export time*; none for a tenant whose plan has no such
line):

- ``credits_burned``: a prepaid tenant's (``pricing.credits``) revenue, as credits. The raw
  value is the revenue in pico-USD (what the balance burned: a request burns exactly its
  revenue); it renders as the exact decimal number of credits, ``rate.credits(raw)``, so sums
  stay exact (``credits(a) + credits(b) == credits(a + b)``).
- ``per_request_charges``: a ``per_request`` tenant's fee part of the revenue, in pico-USD:
  the revenue less its per-token part (the plan's token prices on the entry's own tokens,
  as ``RevenueRule.revenue`` charged them). For an entry the plan priced, that is exactly
  ``RequestPrice.fee(model_requested, feature)`` when it was served (status ``ok``) and 0
  otherwise. Cache hits are no per-request charge (their revenue is the hit price: the
  invoice shows them on a line of their own). The same split as the invoice preview's
  ``per_request_charges`` line, so the two agree to the last unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from farebox.core.credits import CreditRate
from farebox.core.money import PICO_PER_USD, format_usd, parse_usd
from farebox.core.plans import Plan, RequestPrice
from farebox.core.pricing import cost
from farebox.core.records import LedgerEntry
from farebox.core.usage import usage_of

UsageMeter = Literal[
    "input_tokens", "output_tokens", "cost_usd", "revenue_usd", "requests", "cache_hits"
]
PlanMeter = Literal["credits_burned", "per_request_charges"]
Meter = Literal[UsageMeter, PlanMeter]  # every name a sink's ``meters:`` may list
METERS: tuple[Meter, ...] = get_args(UsageMeter)  # a sink's default: the usage meters
PLAN_METERS: tuple[PlanMeter, ...] = get_args(PlanMeter)  # opt-in: they need the plan
ALL_METERS: tuple[str, ...] = (*METERS, *PLAN_METERS)
MONEY_METERS = frozenset({"cost_usd", "revenue_usd", "per_request_charges"})
CREDITS = "credits_burned"
HOUR = 3600
BILLED = frozenset({"ok", "error", "upstream_interrupted", "client_disconnected", "cache_hit"})
WIRE_DECIMALS = 12  # what every sink's value carries at most (``sinks.events.MAX_DECIMALS``)
USD_CREDITS = CreditRate(PICO_PER_USD)  # one credit a dollar: renders a rate-less burn


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """What the plan meters need of a tenant's plan: its credit rate (prepaid plans) and its
    per-request price (``per_request`` plans); None where the plan has no such line."""

    credits: CreditRate | None = None
    per_request: RequestPrice | None = None

    @classmethod
    def of(cls, plan: Plan) -> PlanTerms:
        rate = plan.credits.rate if plan.credits is not None else None
        return cls(rate, plan.revenue.per_request)


NO_TERMS = PlanTerms()


def credits_fit(rate: CreditRate) -> bool:
    """Whether every burn at ``rate`` is a whole number of 10^-12 credits (so it fits the
    sinks' 12 decimals exactly): one credit must divide 10^12 pico-USD (``per_usd`` a whole
    number, such as 1, 100 or 1000)."""
    return (PICO_PER_USD % rate.unit) == 0


def billable(entry: LedgerEntry) -> bool:
    """An ``unsettled`` placeholder is not usage yet: reconciliation shows it instead."""
    return entry.status in BILLED


def request_charge(entry: LedgerEntry, price: RequestPrice | None) -> int:
    """The per-request fee part of ``entry``'s revenue under ``price`` (0 without one; 0 for
    an entry on the tenant's own key, whose revenue is the plan's ``byok_fee``)."""
    if price is None or entry.status == "cache_hit" or entry.byok:
        return 0
    tokens = cost(usage_of(entry), price.tokens) if price.tokens is not None else 0
    # never below 0: an entry priced before its tenant moved to this plan is worth no fee
    # here (for one this plan priced, the revenue always holds its per-token part)
    return max(entry.revenue - tokens, 0)


def raw_value(entry: LedgerEntry, meter: str, terms: PlanTerms = NO_TERMS) -> int:
    """A meter's value as an integer: tokens, requests, or pico-USD for money meters (and
    for ``credits_burned``: the revenue the credits stand for). A BYOK entry (on the tenant's
    own key) counts in the token and request meters like any other; its per-request readings
    carry ``byok`` (the exported event's ``byok: "true"`` property) for a sink to filter on."""
    if meter == "input_tokens":
        return entry.input_tokens
    if meter == "output_tokens":
        return entry.output_tokens
    if meter == "cost_usd":
        return entry.cost
    if meter == "revenue_usd":
        return entry.revenue
    if meter == "requests":
        return 1
    if meter == "cache_hits":
        return 1 if entry.status == "cache_hit" else 0
    if meter == CREDITS:
        return entry.revenue if terms.credits is not None else 0
    if meter == "per_request_charges":
        return request_charge(entry, terms.per_request)
    raise ValueError(f"unknown meter {meter!r}")


def render(meter: str, raw: int, terms: PlanTerms = NO_TERMS) -> str:
    """The value as the wire carries it: an exact decimal string."""
    if meter == CREDITS:
        return (terms.credits or USD_CREDITS).credits(raw)
    return format_usd(raw) if meter in MONEY_METERS else str(raw)


def parse(meter: str, text: str, terms: PlanTerms = NO_TERMS) -> int:
    """``render``'s inverse: the raw value of a value as sent (a dead letter's)."""
    if meter == CREDITS:
        return (terms.credits or USD_CREDITS).to_pico(text, field="value")
    return parse_usd(text, field="value") if meter in MONEY_METERS else int(text)


def unit_of(meter: str) -> str:
    """What a meter counts: ``usd``, ``credits`` or ``count``."""
    return "usd" if meter in MONEY_METERS else "credits" if meter == CREDITS else "count"


@dataclass(frozen=True, slots=True)
class Reading:
    """One value to export: for one request (``unit`` = its request id) or one tenant-hour
    (``unit`` = ``h<unix hour start>``)."""

    tenant: str
    unit: str
    meter: str
    raw: int
    timestamp: int
    model: str | None = None
    workspace: str | None = None  # a request's workspace (issue 14; hourly sums: none)
    byok: bool = False  # a request on the tenant's own key (issue 14; hourly sums: mixed)


def per_request(
    entries: Iterable[LedgerEntry],
    meters: Sequence[str],
    terms: Mapping[str, PlanTerms] | None = None,
) -> list[Reading]:
    """One reading per billable entry and meter with a value. ``terms``: each tenant's plan
    terms (for the plan meters; a tenant without any has none of them)."""
    out = []
    for e in entries:
        if not billable(e):
            continue
        plan = terms.get(e.tenant_id, NO_TERMS) if terms else NO_TERMS
        for meter in meters:
            raw = raw_value(e, meter, plan)
            if raw:
                out.append(Reading(e.tenant_id, e.request_id, meter, raw, int(e.finished_at),
                                   e.model_served, e.workspace, e.byok))  # fmt: skip
    return out


def hour_of(ts: float) -> int:
    return int(ts // HOUR) * HOUR


def per_hour(
    entries: Iterable[LedgerEntry],
    meters: Sequence[str],
    terms: Mapping[str, PlanTerms] | None = None,
) -> list[Reading]:
    """Sums per tenant, hour (of ``finished_at``) and meter."""
    sums: dict[tuple[str, int, str], int] = {}
    for e in entries:
        if not billable(e):
            continue
        hour = hour_of(e.finished_at)
        plan = terms.get(e.tenant_id, NO_TERMS) if terms else NO_TERMS
        for meter in meters:
            raw = raw_value(e, meter, plan)
            if raw:
                slot = (e.tenant_id, hour, meter)
                sums[slot] = sums.get(slot, 0) + raw
    return [Reading(t, f"h{h}", m, raw, h) for (t, h, m), raw in sorted(sums.items())]
