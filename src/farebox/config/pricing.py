"""Pricing models beyond markup and resale, as a plan's ``pricing:`` spells them. Validated
here; the request path sees them as ``farebox.core.plans.RequestPrice``
(``farebox.gateway.routing_table``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from farebox.config.base import Decimal, Strict
from farebox.config.tiers import TieredPricing, check_tiered
from farebox.core.credentials import ByokFee
from farebox.core.credits import CreditRate, CreditTerms
from farebox.core.money import decimal_ratio, parse_usd, price_per_token


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


class CreditPricing(Strict):
    """``pricing.credits``: the plan is prepaid. A request burns its revenue (under the
    plan's pricing model) times ``per_usd`` credits; ``per_usd: 1`` keeps the balance in USD.

    ```yaml
    pricing: {markup: "2", credits: {per_usd: 1000, low_balance: ["1000", "100"]}}
    ```
    """

    per_usd: Decimal | int = "1"  # YAML may give a whole number as a number
    low_balance: list[Decimal] = Field(default_factory=list)  # alert when the balance falls below
    auto_top_up: AutoTopUp | None = None


class AutoTopUp(Strict):
    """Ask the SaaS to charge its customer's card: a signed ``credits.auto_top_up`` event when
    the balance falls below ``below`` credits, asking for ``amount`` credits."""

    below: Decimal
    amount: Decimal


CreditPricing.model_rebuild()


def check_credits(plan: str, cfg: CreditPricing) -> None:
    """``per_usd`` makes one credit a whole number of pico-USD, and every threshold is an
    exact number of credits (``MoneyFormatError`` names the field: a start-up error)."""
    where = f"plans.{plan}.pricing.credits"
    rate = CreditRate.of(cfg.per_usd, field=f"{where}.per_usd")
    for i, value in enumerate(cfg.low_balance):
        rate.to_pico(value, field=f"{where}.low_balance[{i}]")
    if cfg.auto_top_up is not None:
        rate.to_pico(cfg.auto_top_up.below, field=f"{where}.auto_top_up.below")
        rate.to_pico(cfg.auto_top_up.amount, field=f"{where}.auto_top_up.amount")


class ResalePrice(Strict):
    input: Decimal = "0"
    output: Decimal = "0"
    cached_input: Decimal | None = None


class ByokFeePricing(Strict):
    """``pricing.byok_fee`` (issue 14): what a request served on the tenant's own provider
    key earns (its cost to the platform is 0): USD per request, per 1M tokens, or both.

    ```yaml
    pricing: {markup: "1.2", byok_fee: {per_request_usd: "0.001", per_million_tokens_usd: "0.10"}}
    ```
    """

    per_request_usd: Decimal = "0"
    per_million_tokens_usd: Decimal = "0"


def byok_fee(plan: str, cfg: ByokFeePricing) -> ByokFee:
    """A plan's ``byok_fee`` in exact pico-USD (``MoneyFormatError`` names the field)."""
    where = f"plans.{plan}.pricing.byok_fee"
    return ByokFee(
        parse_usd(cfg.per_request_usd, field=f"{where}.per_request_usd"),
        price_per_token(cfg.per_million_tokens_usd, field=f"{where}.per_million_tokens_usd"),
    )


class PlanPricing(Strict):
    markup: Decimal | None = None
    resale: ResalePrice | None = None
    per_request: PerRequestPricing | None = None
    tiered: TieredPricing | None = None
    credits: CreditPricing | None = None
    cache_hit: Literal["full", "cost", "free"] = "full"
    monthly_fee_usd: Decimal = "0"
    byok_fee: ByokFeePricing | None = None

    @model_validator(mode="after")
    def _one_model(self) -> PlanPricing:
        models = ("markup", "resale", "per_request", "tiered")
        chosen = [n for n in models if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"choose one pricing model, not {' and '.join(chosen)}")
        if self.credits is not None and self.tiered is not None:
            raise ValueError("a tiered plan cannot be prepaid with credits")
        return self


def check_pricing(plan: str, pricing: PlanPricing) -> None:
    """Every amount of a plan's ``pricing`` is exact money (a start-up error otherwise)."""
    where = f"plans.{plan}.pricing"
    if pricing.markup is not None:
        decimal_ratio(pricing.markup, field=f"{where}.markup")
    if pricing.per_request is not None:
        check_per_request(plan, pricing.per_request)
    if pricing.resale is not None:
        for field, value in pricing.resale.model_dump().items():
            if value is not None:
                price_per_token(value, field=f"{where}.resale.{field}")
    if pricing.credits is not None:
        check_credits(plan, pricing.credits)
    if pricing.tiered is not None:
        check_tiered(plan, pricing.tiered)
    parse_usd(pricing.monthly_fee_usd, field=f"{where}.monthly_fee_usd")
    if pricing.byok_fee is not None:
        byok_fee(plan, pricing.byok_fee)


def credit_terms(cfg: CreditPricing) -> CreditTerms:
    """A plan's ``pricing.credits`` as the request path sees it (checked at start-up)."""
    rate = CreditRate.of(cfg.per_usd)
    top = cfg.auto_top_up
    return CreditTerms(
        rate,
        tuple(rate.to_pico(v) for v in cfg.low_balance),
        (rate.to_pico(top.below), rate.to_pico(top.amount)) if top else None,
    )
