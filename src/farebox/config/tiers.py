"""``pricing.tiered``: a monthly fee (``pricing.monthly_fee_usd``) with an included allowance,
then graduated tiers. Validated here (``check_tiered``, a start-up error naming the plan and
the field); the request path and the invoice see it as ``farebox.core.tiers.TierSchedule``
(``schedule``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from farebox.config.base import Decimal, Strict
from farebox.core.money import MoneyFormatError, parse_usd
from farebox.core.tiers import Tier as CoreTier
from farebox.core.tiers import TierSchedule


class Tier(Strict):
    """One graduated tier: the month's usage above the previous bound (or the allowance) and
    up to this tier's ``up_to`` (None: without end), at ``price``.

    ``up_to`` counts the month's whole usage, the allowance included, in the metric's unit:
    tokens, requests, or USD of cost (a decimal string such as ``"100"``). ``price`` is USD
    per million tokens (at most 6 decimals would keep a token's price whole; any exact
    decimal is accepted, the month's charge is floored to the pico-USD), per request, or
    per USD of cost (``"1.5"``: 1.5 times the cost)."""

    up_to: Decimal | int | None = None
    price: Decimal = "0"


class TieredPricing(Strict):
    """```yaml
    pricing:
      monthly_fee_usd: "49"
      tiered:
        metric: tokens            # tokens | requests | usd (the usage's provider cost)
        included: 2000000         # covered by the fee (tokens; requests; USD as "20")
        tiers:                    # graduated, above the allowance
          - {up_to: 10000000, price: "8"}   # up to 10M tokens in the month: $8 per 1M
          - {price: "6"}                    # beyond: $6 per 1M (the last tier has no up_to)
    ```
    ``tokens`` counts a request's whole prompt and its output; ``requests`` counts served
    requests (status ``ok``); ``usd`` its provider cost. Cache hits use no allowance (the
    plan's cache hit price applies to them)."""

    metric: Literal["tokens", "requests", "usd"] = "tokens"
    included: Decimal | int = "0"
    tiers: list[Tier] = Field(default_factory=list)


def _units(metric: str, value: str | int, field: str) -> int:
    """A quantity of ``metric``: whole tokens or requests, or exact USD as pico-USD."""
    if metric == "usd":
        return parse_usd(value, field=field)
    text = str(value).strip()
    if not text.isdigit():
        raise MoneyFormatError(f"{field}: {value!r} must be a whole number of {metric}")
    return int(text)


def schedule(plan: str, cfg: TieredPricing) -> TierSchedule:
    """A plan's ``pricing.tiered`` as integers, checked (``MoneyFormatError`` names the plan
    and the field: a start-up error): exact prices, bounds above the allowance and strictly
    ascending, at least one tier, the last one without end."""
    where = f"plans.{plan}.pricing.tiered"
    included = _units(cfg.metric, cfg.included, f"{where}.included")
    if not cfg.tiers:
        raise MoneyFormatError(f"{where}.tiers: give at least one tier (the last without up_to)")
    tiers, low = [], included
    for i, tier in enumerate(cfg.tiers):
        field = f"{where}.tiers[{i}]"
        price = parse_usd(tier.price, field=f"{field}.price")
        last = i == len(cfg.tiers) - 1
        if tier.up_to is None:
            if not last:
                raise MoneyFormatError(f"{field}.up_to: only the last tier may be without end")
            tiers.append(CoreTier(None, price))
            continue
        if last:
            raise MoneyFormatError(f"{field}.up_to: the last tier must be without end")
        bound = _units(cfg.metric, tier.up_to, f"{field}.up_to")
        if bound <= low:
            raise MoneyFormatError(
                f"{field}.up_to: {tier.up_to} must be above the allowance and the previous "
                "tier's up_to (tiers ascend)"
            )
        tiers.append(CoreTier(bound, price))
        low = bound
    return TierSchedule(cfg.metric, included, tuple(tiers))


def check_tiered(plan: str, cfg: TieredPricing) -> None:
    """``schedule``'s checks, at start-up."""
    schedule(plan, cfg)
