"""``pricing.tiered``: a monthly fee with an included allowance, then graduated tiers.
(Owned by the tiered-pricing work; the schema below is the seam.)"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from farebox.config.base import Decimal, Strict


class Tier(Strict):
    """One graduated tier: usage above the previous tier's ``up_to`` and up to this one
    (None: without end), priced per ``unit`` of the metric."""

    up_to: int | None = Field(None, ge=1)
    price: Decimal = "0"  # USD per million tokens | per request | per USD of usage


class TieredPricing(Strict):
    """```yaml
    pricing:
      monthly_fee_usd: "49"
      tiered:
        metric: tokens            # tokens | requests | usd (the usage's cost)
        included: 2000000         # covered by the fee
        tiers:                    # graduated, above the allowance
          - {up_to: 10000000, price: "8"}
          - {price: "6"}
    ```"""

    metric: Literal["tokens", "requests", "usd"] = "tokens"
    included: Decimal = "0"
    tiers: list[Tier] = Field(default_factory=list)
