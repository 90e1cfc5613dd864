"""Issue [13], "Seen" in GraphQL: prepaid credits, the invoice preview and plan profitability
(top spenders are in ``resolvers``). Each resolver calls the admin API's own handler or the
billing function behind it, and each type holds its REST answer's fields under the same
(camel-cased) names, so a GraphQL answer is the REST answer, number for number.

A panel of another report joins in three steps: its type here (the REST object's fields), a
resolver calling its handler, and a field on the schema (with its ``limits.FIELD_COST``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import strawberry

from farebox.api.admin.billing import MONTH_PATTERN
from farebox.api.admin.credits import CreditGrantOut, CreditRoutes, CreditsOut
from farebox.api.admin.invoices import InvoiceRoutes
from farebox.api.graphql import types as t
from farebox.api.graphql.context import GraphContext
from farebox.api.graphql.convert import same_names
from farebox.billing.profitability import plan_profitability
from farebox.errors import InvalidRequest


# the REST models' own fields, descriptions and names (camel-cased): one definition
@strawberry.experimental.pydantic.type(model=CreditGrantOut, all_fields=True,
                                       description=CreditGrantOut.__doc__)  # fmt: skip
class CreditGrant:
    pass


@strawberry.experimental.pydantic.type(model=CreditsOut, all_fields=True,
                                       description=CreditsOut.__doc__)  # fmt: skip
class Credits:
    pass


@strawberry.type(description="One line of an invoice preview.")
class InvoiceLine:
    kind: str = strawberry.field(
        description="monthly_fee, included_allowance, overage_tier, token_usage_charges, "
        "per_request_charges, cache_hit_charges, other_usage or credits_burned."
    )
    description: str
    quantity: str | None
    unit: str | None
    amount_usd: str
    counted: bool = strawberry.field(description="Part of the total (credits burned are not).")


@strawberry.type(description="A tenant's UTC month (GET /admin/v1/tenants/{id}/invoice).")
class Invoice:
    tenant: str
    plan: str
    month: str
    requests: t.BigInt
    lines: list[InvoiceLine]
    fee_usd: str
    usage_usd: str
    total_usd: str = strawberry.field(description="The fee plus the month's usage, exactly.")
    credits_burned: str | None = strawberry.field(description="Null unless the plan is prepaid.")


@strawberry.type(description="The tenant at the 90th percentile of usage (provider cost).")
class UsageTenant:
    tenant: str
    cost_usd: str
    revenue_usd: str
    margin_usd: str = strawberry.field(description="Signed: '-4.00' is a loss.")
    profitable: bool


@strawberry.type(description="One plan's month (as GET /admin/v1/plan-profitability).")
class PlanMargins:
    plan: str
    tenants: int
    margin_p10_usd: str = strawberry.field(description="Nearest rank; signed.")
    margin_p50_usd: str
    margin_p90_usd: str
    profitable_share: str | None = strawberry.field(
        description="Tenants with a positive margin / tenants, to 4 places."
    )
    p90_usage_tenant: UsageTenant
    revenue_usd: str
    cost_usd: str
    margin_usd: str


@strawberry.type(description="Every plan with tenants in the month, by name.")
class PlanProfitability:
    month: str
    plans: list[PlanMargins]


def month_arg(ctx: GraphContext, month: str | None) -> str:
    """``month`` as the REST parameter takes it (``2026-11``); None: the current UTC month."""
    if month is None:
        return datetime.fromtimestamp(ctx.tenancy.now(), UTC).strftime("%Y-%m")
    if not re.fullmatch(MONTH_PATTERN, month):
        raise InvalidRequest(
            f"'month' must look like 2026-11, a UTC year and month (got {month!r:.40}).",
            param="month",
        )
    return month


async def credits(ctx: GraphContext, tenant: str, *, prepaid_only: bool) -> Credits | None:
    """As ``GET /admin/v1/tenants/{id}/credits``, by its own handler. A tenant whose plan is
    not prepaid: the REST 400 when ``prepaid_only`` (the admin asked for it by name), else
    None (a tenant asking for its own balance)."""
    routes = CreditRoutes(ctx.services, ctx.tenancy)
    if not prepaid_only:
        found = await ctx.tenancy.tenant(tenant)
        if ctx.services.gateway.plan_of(found).credits is None:
            return None
    view = (await routes.credits(tenant)).model_dump()
    grants = [same_names(CreditGrant, g.__getitem__) for g in view["grants"]]
    return same_names(Credits, view.__getitem__, grants=grants)


async def invoice(ctx: GraphContext, tenant: str, month: str | None) -> Invoice:
    """As ``GET /admin/v1/tenants/{id}/invoice?month=``, by its own handler."""
    routes = InvoiceRoutes(ctx.services, ctx.tenancy.now)
    found = await routes.tenant_invoice(tenant, month_arg(ctx, month))
    lines = [same_names(InvoiceLine, line.__getitem__) for line in found["lines"]]
    return same_names(Invoice, found.__getitem__, lines=lines, requests=t.BigInt(found["requests"]))


async def profitability(ctx: GraphContext, month: str | None) -> PlanProfitability:
    """As ``GET /admin/v1/plan-profitability?month=``: the same billing function."""
    file = ctx.services.settings.file
    found = await plan_profitability(
        ctx.services.store, file.plans, file.default_plan or "default", month_arg(ctx, month)
    )
    plans = [
        same_names(PlanMargins, p.__getitem__,
                   p90_usage_tenant=same_names(UsageTenant, p["p90_usage_tenant"].__getitem__))
        for p in found["data"]
    ]  # fmt: skip
    return PlanProfitability(month=found["month"], plans=plans)
