"""Issue [13], "Seen" in GraphQL, revenue intelligence: upsell conversion and the what-if
repricing, on the admin schema. Each resolver calls the admin API's own handler
(``RevenueRoutes.upsell``, ``RevenueRoutes.what_if``), with its arguments checked as the REST
request's are (``upsell_window``, ``reprice_body``: the same 400 messages), and each type holds
the REST answer's fields under the same (camel-cased) names. ``reprice`` is a query: a what-if
changes nothing.
"""

from __future__ import annotations

from typing import Any

import strawberry

from farebox.api.admin.revenue import RevenueRoutes, reprice_body, upsell_window
from farebox.api.graphql import types as t
from farebox.api.graphql.context import GraphContext
from farebox.api.graphql.convert import same_names
from farebox.api.graphql.revenue import month_arg


@strawberry.type(description="Upsell moments and conversions of one group (or of all).")
class UpsellLine:
    moments: int = strawberry.field(description="Refusals for want of money, one per tenant, "
                                    "kind, budget and hour.")  # fmt: skip
    tenants_refused: int
    tenants_converted: int = strawberry.field(
        description="Moved to a higher-fee plan or topped up within the window."
    )
    conversion_rate_percent: str | None = strawberry.field(
        description="Converted / refused, a percentage to 2 places; null when none refused."
    )
    converted_revenue_usd: str = strawberry.field(description="The converted tenants' month.")
    converted_tenants: list[str]


@strawberry.type(description="The upsell line of a plan (the tenant's plan when refused).")
class UpsellPlan(UpsellLine):
    plan: str


@strawberry.type(description="The upsell line of a refusal kind and budget.")
class UpsellBudget(UpsellLine):
    kind: str = strawberry.field(description="budget_exceeded or insufficient_credits.")
    budget: str | None = strawberry.field(description="scope/period[/name]; null for credits.")


@strawberry.type(description="A UTC month's upsell conversion (GET /admin/v1/upsell).")
class Upsell:
    month: str
    window_days: int
    by_plan: list[UpsellPlan]
    by_budget: list[UpsellBudget]
    total: UpsellLine


@strawberry.input(description="A proposed resale price, USD per 1M tokens.")
class ResaleInput:
    input: str = "0"
    output: str = "0"
    cached_input: str | None = strawberry.field(
        default=None, description="Default: the input price."
    )


@strawberry.type(description="A resale price as proposed, USD per 1M tokens.")
class ResalePrice:
    input: str
    output: str
    cached_input: str | None


@strawberry.type(description="The price a what-if proposed.")
class RepriceProposal:
    markup: str | None
    resale: ResalePrice | None
    per_request: str | None
    monthly_fee_usd: str | None


@strawberry.type(description="Revenue and margin, before and after (margins signed).")
class RepriceMoney:
    revenue_before_usd: str
    revenue_after_usd: str
    revenue_change_usd: str
    margin_before_usd: str
    margin_after_usd: str
    margin_before_percent: str | None
    margin_after_percent: str | None


@strawberry.type(description="One tenant of the plan, before and after.")
class RepriceTenant(RepriceMoney):
    tenant: str
    requests: t.BigInt
    cost_usd: str


@strawberry.type(description="The plan's tenants together.")
class RepriceTotal(RepriceMoney):
    tenants: int
    cost_usd: str


@strawberry.type(description="A what-if (POST /admin/v1/reprice): nothing is changed.")
class Reprice:
    month: str
    plan: str
    proposed: RepriceProposal
    applied: bool
    data: list[RepriceTenant]
    total: RepriceTotal


async def upsell(ctx: GraphContext, month: str | None, window_days: int) -> Upsell:
    """As ``GET /admin/v1/upsell?month=&window_days=``, by its own handler."""
    routes = RevenueRoutes(ctx.services, ctx.tenancy)
    found = await routes.upsell(month_arg(ctx, month), upsell_window(window_days))
    return same_names(
        Upsell, found.__getitem__,
        by_plan=[same_names(UpsellPlan, g.__getitem__) for g in found["by_plan"]],
        by_budget=[same_names(UpsellBudget, g.__getitem__) for g in found["by_budget"]],
        total=same_names(UpsellLine, found["total"].__getitem__),
    )  # fmt: skip


def _proposal(proposed: dict[str, Any]) -> RepriceProposal:
    resale = proposed.get("resale")
    price = None if resale is None else same_names(ResalePrice, resale.get)
    return same_names(RepriceProposal, proposed.get, resale=price)


async def reprice(
    ctx: GraphContext, month: str | None, plan: str, price: dict[str, Any],
    resale: ResaleInput | None,
) -> Reprice:  # fmt: skip
    """As ``POST /admin/v1/reprice`` with the same body, by its own handler."""
    body: dict[str, Any] = {"month": month_arg(ctx, month), "plan": plan}
    body |= {k: v for k, v in price.items() if v is not None}
    if resale is not None:
        body["resale"] = {k: v for k, v in vars(resale).items() if v is not None}
    found = await RevenueRoutes(ctx.services, ctx.tenancy).what_if(reprice_body(body))
    data = [same_names(RepriceTenant, d.__getitem__, requests=t.BigInt(d["requests"]))
            for d in found["data"]]  # fmt: skip
    return same_names(
        Reprice, found.__getitem__, proposed=_proposal(found["proposed"]), data=data,
        total=same_names(RepriceTotal, found["total"].__getitem__),
    )  # fmt: skip
