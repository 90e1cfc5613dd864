"""Turn validated settings into the request path's routing table and plans."""

from __future__ import annotations

import dataclasses
from typing import Any

from farebox.config.cache import PlanCache
from farebox.config.guardrails import guardrail_policy
from farebox.config.pricing import PerRequestPricing, byok_fee, credit_terms
from farebox.config.settings import PlanConfig, ProviderConfig, Settings
from farebox.config.tiers import schedule
from farebox.core.cache import CachePolicy, HitPrice
from farebox.core.money import decimal_ratio, parse_usd
from farebox.core.plans import Plan, RequestPrice, RevenueRule
from farebox.core.pricing import Catalog, Price
from farebox.core.routing import Router, Target
from farebox.core.tools import ToolPolicy
from farebox.errors import ConfigError

MOCK_PROVIDER = "mock"


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    """The configured providers, or the built-in mock when none are configured."""
    if settings.file.providers:
        return dict(settings.file.providers)
    return {MOCK_PROVIDER: ProviderConfig(kind="mock")}


def _price(settings: Settings, catalog: Catalog, model: str, where: str) -> Price | None:
    base = catalog.get(model)
    override = settings.file.pricing.get(model)
    if override is not None:
        fields = override.fields()
        base = (
            base.merged(fields, where=f"pricing.{model}")
            if base
            else (Price.from_per_million(fields, where=f"pricing.{model}"))
        )
    return base


def _serves(kind: str, family: str) -> bool:
    return kind == "mock" or kind == family


def build_router(settings: Settings, catalog: Catalog) -> Router:
    providers = provider_configs(settings)
    routes: dict[str, tuple[Target, ...]] = {}
    for model, family in catalog.families.items():
        provider = next((n for n, p in providers.items() if _serves(p.kind, family)), None)
        price = _price(settings, catalog, model, f"catalog.{model}")
        if provider is not None and price is not None:
            kind = catalog.kinds.get(model, "chat")
            timeout = providers[provider].timeout_s
            routes[model] = (Target(provider, model, price, kind, timeout_s=timeout),)
    for alias, deployments in settings.file.models.items():
        targets = []
        for i, dep in enumerate(deployments):
            where = f"{settings.source}: models.{alias}.{i}"
            price = _price(settings, catalog, dep.model, where)
            if dep.price is not None:
                fields = dep.price.fields()
                price = (
                    price.merged(fields, where=where)
                    if price
                    else (
                        Price.from_per_million(fields, where=where) if "input" in fields else None
                    )
                )
            if price is None:
                raise ConfigError(
                    f"{where}: model {dep.model!r} is not in the price catalog "
                    f'({catalog.date}); give it a price, e.g. price: {{input: "0", output: "0"}}'
                )
            kind = catalog.kinds.get(dep.model) or catalog.kinds.get(alias, "chat")
            timeout = providers[dep.provider].timeout_s if dep.provider in providers else 600.0
            targets.append(Target(dep.provider, dep.model, price, kind, dep.weight, timeout,
                                  dep.context_window))  # fmt: skip
        routes[alias] = tuple(targets)
    return Router(routes)


def _plan(name: str, cfg: PlanConfig) -> Plan:
    rule = RevenueRule()
    if cfg.pricing.markup is not None:
        num, den = decimal_ratio(cfg.pricing.markup)
        rule = RevenueRule(markup_num=num, markup_den=den)
    elif cfg.pricing.per_request is not None:
        rule = RevenueRule(per_request=request_price(name, cfg.pricing.per_request))
    elif cfg.pricing.tiered is not None:
        rule = RevenueRule(tiered=schedule(name, cfg.pricing.tiered))
    elif cfg.pricing.resale is not None:
        resale = {k: v for k, v in cfg.pricing.resale.model_dump().items() if v is not None}
        rule = RevenueRule(
            resale=Price.from_per_million(resale, where=f"plans.{name}.pricing.resale")
        )
    if cfg.pricing.byok_fee is not None:  # issue 14: requests on the tenant's own key
        rule = dataclasses.replace(rule, byok=byok_fee(name, cfg.pricing.byok_fee))
    return Plan(
        name=name,
        models=tuple(cfg.models),
        max_tokens=cfg.max_tokens,
        max_tokens_policy=cfg.max_tokens_policy,
        max_input_chars=cfg.max_input_chars,
        max_input_tokens=cfg.max_input_tokens,
        tools=ToolPolicy(
            deny=tuple(cfg.tools.deny),
            allow=tuple(cfg.tools.allow),
            require_approval=tuple(cfg.tools.require_approval),
        ),
        timeout_s=cfg.timeout_s,
        revenue=rule,
        downgrade=tuple(cfg.downgrade.items()),
        cache=cache_policy(cfg.cache),
        credits=credit_terms(cfg.pricing.credits) if cfg.pricing.credits else None,
        guardrails=guardrail_policy(cfg.guardrails),
    )


def request_price(plan: str, cfg: PerRequestPricing) -> RequestPrice:
    """A plan's ``pricing.per_request`` in pico-USD."""
    where = f"plans.{plan}.pricing.per_request"

    def usd(value: str, name: str) -> int:
        return parse_usd(value, field=f"{where}.{name}")

    tokens = None
    if cfg.tokens is not None:
        fields = {k: v for k, v in cfg.tokens.model_dump().items() if v is not None}
        tokens = Price.from_per_million(fields, where=f"{where}.tokens")
    return RequestPrice(
        default=usd(cfg.price, "price"),
        models=tuple((m, usd(v, f"models.{m}")) for m, v in cfg.models.items()),
        features=tuple((f, usd(v, f"features.{f}")) for f, v in cfg.features.items()),
        tokens=tokens,
    )


def cache_policy(cfg: PlanCache) -> CachePolicy:
    """A plan's ``cache:`` section as the request path sees it."""
    price = {"free": HitPrice(0, 1), "full": HitPrice(1, 1)}.get(cfg.hit_price)
    if price is None:
        price = HitPrice(*decimal_ratio(cfg.hit_price, field="cache.hit_price"))
    hot_num, hot_den = decimal_ratio(cfg.semantic_max_temperature, field="cache")
    return CachePolicy(
        mode=cfg.mode,
        ttl_s=cfg.ttl_s,
        max_entries=cfg.max_entries,
        max_bytes=cfg.max_bytes,
        partition=cfg.partition,
        hit_price=price,
        max_temperature_num=hot_num,
        max_temperature_den=hot_den,
    )


def build_plans(settings: Settings) -> dict[str, Plan]:
    plans = {name: _plan(name, cfg) for name, cfg in settings.file.plans.items()}
    plans.setdefault("default", Plan(name="default"))
    return plans


def policy_json(plan: Plan) -> dict[str, Any]:
    """A plan's request policy as /v1/me and the admin API show it."""
    return {
        "models": list(plan.models),
        "max_tokens": plan.max_tokens,
        "max_tokens_policy": plan.max_tokens_policy,
        "max_input_chars": plan.max_input_chars,
        "max_input_tokens": plan.max_input_tokens,
        "timeout_s": plan.timeout_s,
        "tools": {
            "deny": list(plan.tools.deny),
            "allow": list(plan.tools.allow),
            "require_approval": list(plan.tools.require_approval),
        },
        "downgrade": dict(plan.downgrade),
    }
