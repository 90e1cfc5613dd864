"""Pricing models beyond markup and resale, as a plan's ``pricing:`` spells them. Validated
here; the request path sees them as ``farebox.core.plans.RequestPrice``
(``farebox.gateway.routing_table``)."""

from __future__ import annotations

from pydantic import Field

from farebox.config.base import Decimal, Strict
from farebox.core.money import parse_usd, price_per_token


class TokenPart(Strict):
    """The per-token part of a per-request price, USD per 1M tokens."""

    input: Decimal = "0"
    output: Decimal = "0"
    cached_input: Decimal | None = None


class PerRequestPricing(Strict):
    """``pricing.per_request``: a price per served request, by feature (``X-Farebox-Feature``)
    first, then by model alias, else ``price``; plus, optionally, a per-token part.

    ```yaml
    pricing:
      per_request:
        price: "0.02"                           # USD per request
        models: {gpt-4o: "0.05"}                # per model alias (as the client names it)
        features: {document_analysis: "0.10"}   # per feature (wins over the model)
        tokens: {input: "0.50", output: "1.50"} # optional, USD per 1M tokens
    ```
    """

    price: Decimal = "0"
    models: dict[str, Decimal] = Field(default_factory=dict)
    features: dict[str, Decimal] = Field(default_factory=dict)
    tokens: TokenPart | None = None


def check_per_request(plan: str, cfg: PerRequestPricing) -> None:
    """Every amount of a plan's ``per_request`` is exact money (``MoneyFormatError`` names
    the field: a start-up error)."""
    where = f"plans.{plan}.pricing.per_request"
    parse_usd(cfg.price, field=f"{where}.price")
    for kind, prices in (("models", cfg.models), ("features", cfg.features)):
        for name, value in prices.items():
            parse_usd(value, field=f"{where}.{kind}.{name}")
    if cfg.tokens is not None:
        for field, value in cfg.tokens.model_dump().items():
            if value is not None:
                price_per_token(value, field=f"{where}.tokens.{field}")
