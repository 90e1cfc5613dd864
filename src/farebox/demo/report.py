"""What ``farebox demo`` shows as tables: each demo tenant with what its plan gives and its
key, and, after ``--traffic``, what each tenant's simulated clients got and what it cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from farebox.core.money import format_usd
from farebox.demo.drive import Tally
from farebox.demo.seed import DEMO_PLANS, DEMO_TENANTS

RATE_LIMITED = ("rate_limit_exceeded",)
OVER_BUDGET = ("budget_exceeded",)
PAUSED = ("tenant_paused", "key_paused")
KEY_COLUMNS = ("tenant", "plan", "budget", "rate_limit", "key")
SUMMARY_COLUMNS = ("tenant", "plan", "served", "rate_limited", "over_budget", "paused",
                   "failed", "cost_usd", "revenue_usd")  # fmt: skip


def budget_terms(plan: Mapping[str, Any]) -> str:
    """``$0.50/day, $15/month``, or ``none``."""
    parts = [f"${b['limit_usd']}/{b['period']}" for b in plan.get("budgets", [])]
    return ", ".join(parts) or "none"


def rate_limit_terms(plan: Mapping[str, Any]) -> str:
    """``10 requests/minute per ip``, or ``none``."""
    parts = []
    for limit in plan.get("rate_limits", []):
        scope = limit.get("scope")
        for name, value in limit.items():
            if "_per_" in name:
                what, per = name.split("_per_", 1)
                parts.append(f"{value} {what}/{per}" + (f" per {scope}" if scope else ""))
    return ", ".join(parts) or "none"


def key_rows(keys: Mapping[str, str]) -> list[dict[str, str]]:
    """One row per demo tenant that got a key, in the order the demo creates them."""
    return [
        {"tenant": tenant, "plan": plan, "budget": budget_terms(DEMO_PLANS[plan]),
         "rate_limit": rate_limit_terms(DEMO_PLANS[plan]), "key": keys[tenant]}
        for tenant, _, plan in DEMO_TENANTS
        if tenant in keys
    ]  # fmt: skip


def summary_rows(
    tallies: Mapping[str, Tally], ledger: Mapping[str, tuple[int, int]]
) -> list[dict[str, str | int]]:
    """Per tenant: the answers its clients got (served, refused by rate limit, by budget, by
    pause, other failures) and its (cost, revenue) in pico-USD as the ledger has them."""
    plans = {tenant: plan for tenant, _, plan in DEMO_TENANTS}
    rows: list[dict[str, str | int]] = []
    for tenant, tally in tallies.items():
        served = tally.served()
        refused = [tally.refused(codes) for codes in (RATE_LIMITED, OVER_BUDGET, PAUSED)]
        cost, revenue = ledger.get(tenant, (0, 0))
        rows.append(
            {"tenant": tenant, "plan": plans.get(tenant, ""), "served": served,
             "rate_limited": refused[0], "over_budget": refused[1], "paused": refused[2],
             "failed": tally.errors + tally.requests - served - sum(refused),
             "cost_usd": format_usd(cost), "revenue_usd": format_usd(revenue)}
        )  # fmt: skip
    return rows
