"""The two schemas: the admin's (every tenant; a ``tenant`` argument where it filters) and a
tenant key's (the same types, no ``tenant`` argument anywhere: every resolver takes the tenant
from the context the server built from the key, and nothing reaches another tenant's rows)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, Info

from farebox.api.graphql import findings, intelligence, limits, resolvers, revenue
from farebox.api.graphql import types as t
from farebox.api.graphql.context import GraphContext
from farebox.errors import FareboxError

Ctx = Info[GraphContext, None]
F = TypeVar("F", bound=Callable[..., Any])
From = Annotated[str | None, strawberry.argument(
    name="from", description="From this time (inclusive): unix seconds or ISO 8601, UTC when "
    "no zone is given.")]  # fmt: skip
To = Annotated[str | None, strawberry.argument(
    name="to", description="Before this time (exclusive), as `from`.")]  # fmt: skip
FINDINGS = ("Requests with guardrail findings, newest first, a page at a time, as GET "
            "/admin/v1/guardrails/findings: a request matches when one of its findings has the "
            "detector, category and action given. Never the matched text.")  # fmt: skip


def described(text: str | None) -> Callable[[F], F]:
    """``strawberry.field`` with a description, typed for mypy."""
    return cast(Callable[[F], F], strawberry.field(description=text))


log = logging.getLogger("farebox.graphql")


def _own(info: Ctx) -> str:
    tenant = info.context.tenant
    assert tenant is not None  # the tenant schema is only served with a tenant's context
    return tenant


@strawberry.type(name="Query", description="The admin's view: every tenant.")
class AdminQuery:
    @described("Sums over [start, end) per bucket and group.")
    async def series(
        self, info: Ctx, start: str, end: str, bucket: t.Bucket = t.Bucket.DAY,
        tz: str = "UTC", group_by: t.GroupBy | None = None, tag: str | None = None,
        filter: t.SeriesFilter | None = None, tenant: str | None = None,
    ) -> list[t.SeriesPoint]:  # fmt: skip
        return await resolvers.series_points(
            info.context, tenant, (start, end), bucket, tz, group_by, tag, filter
        )

    @described("A tenant's budgets, as GET /admin/v1/tenants/{id}/budgets.")
    async def budgets(self, info: Ctx, tenant: str) -> list[t.Budget]:
        return await resolvers.budgets(info.context, tenant)

    @described("Tenants ranked by cost or revenue over [start, end) or a UTC month: the top n "
               "or top %.")  # fmt: skip
    async def top_spenders(
        self, info: Ctx, start: str | None = None, end: str | None = None,
        by: t.RankBy = t.RankBy.COST, n: int | None = None, top_percent: float | None = None,
        month: str | None = None,
    ) -> t.TopSpenders:  # fmt: skip
        span = (start, end, month)
        return await resolvers.top_spenders(info.context, span, by, n, top_percent)

    @described("A prepaid tenant's credits, as GET /admin/v1/tenants/{id}/credits.")
    async def credits(self, info: Ctx, tenant: str) -> revenue.Credits:
        found = await revenue.credits(info.context, tenant, prepaid_only=True)
        assert found is not None
        return found

    @described("A tenant's invoice preview for a UTC month (default: this one).")
    async def invoice(self, info: Ctx, tenant: str, month: str | None = None) -> revenue.Invoice:
        return await revenue.invoice(info.context, tenant, month)

    @described("Per plan: margin p10/p50/p90, the profitable share, the p90-usage tenant.")
    async def plan_profitability(
        self, info: Ctx, month: str | None = None
    ) -> revenue.PlanProfitability:
        return await revenue.profitability(info.context, month)

    @described("Upsell conversion of a UTC month (default: this one), per plan and per "
               "budget, as GET /admin/v1/upsell.")  # fmt: skip
    async def upsell(
        self, info: Ctx, month: str | None = None, window_days: int = 14
    ) -> intelligence.Upsell:
        return await intelligence.upsell(info.context, month, window_days)

    @described(
        "What-if: a plan's UTC month (default: this one) at a proposed price (exactly "
        "one of markup, resale, perRequest), as POST /admin/v1/reprice. Changes nothing."
    )
    async def reprice(
        self, info: Ctx, plan: str, month: str | None = None, markup: str | None = None,
        resale: intelligence.ResaleInput | None = None, per_request: str | None = None,
        monthly_fee_usd: str | None = None,
    ) -> intelligence.Reprice:  # fmt: skip
        price = {"markup": markup, "per_request": per_request, "monthly_fee_usd": monthly_fee_usd}
        return await intelligence.reprice(info.context, month, plan, price, resale)

    @described("Anomaly incidents, as GET /admin/v1/anomalies.")
    async def anomalies(
        self, info: Ctx, tenant: str | None = None, status: t.IncidentStatus | None = None
    ) -> list[t.Anomaly]:
        return await resolvers.anomalies(info.context, tenant, status)

    @described("Deployments and their breakers.")
    def deployments(self, info: Ctx) -> list[t.Deployment]:
        return resolvers.deployments(info.context)

    @described("The request log, newest first, a page at a time.")
    async def requests(
        self, info: Ctx, filter: t.RequestFilter | None = None, first: int = 50,
        after: str | None = None, tenant: str | None = None,
    ) -> t.RequestPage:  # fmt: skip
        return await resolvers.requests(info.context, tenant, filter, first, after)

    @described(FINDINGS)
    async def guardrail_findings(
        self, info: Ctx, tenant: str | None = None, key: str | None = None,
        detector: str | None = None, category: str | None = None, action: str | None = None,
        start: From = None, end: To = None, first: int = 50, after: str | None = None,
    ) -> findings.GuardrailFindingPage:  # fmt: skip
        asked = {"key": key, "detector": detector, "category": category, "action": action,
                 "from": start, "to": end}  # fmt: skip
        return await findings.guardrail_findings(info.context, tenant, asked, first, after)

    @described(None)
    async def tenants(self, info: Ctx, id: str | None = None) -> list[t.Tenant]:
        return await resolvers.tenants(info.context, id)

    @described("API keys (never their secrets).")
    async def keys(self, info: Ctx, tenant: str | None = None) -> list[t.Key]:
        return await resolvers.keys(info.context, tenant)

    @described("A tenant's response cache over [since, until) (default: this UTC month).")
    async def cache(
        self, info: Ctx, tenant: str, since: str | None = None, until: str | None = None
    ) -> t.CacheStats:
        return await resolvers.cache(info.context, tenant, since, until)

    @described("Every tenant's response cache with lookups in the period or entries now.")
    async def caches(
        self, info: Ctx, since: str | None = None, until: str | None = None
    ) -> list[t.CacheStats]:
        return await resolvers.caches(info.context, since, until)


@strawberry.type(name="Query", description="A tenant's own view: its data only.")
class TenantQuery:
    @described("Sums over [start, end) per bucket and group.")
    async def series(
        self, info: Ctx, start: str, end: str, bucket: t.Bucket = t.Bucket.DAY,
        tz: str = "UTC", group_by: t.GroupBy | None = None, tag: str | None = None,
        filter: t.SeriesFilter | None = None,
    ) -> list[t.SeriesPoint]:  # fmt: skip
        return await resolvers.series_points(
            info.context, _own(info), (start, end), bucket, tz, group_by, tag, filter
        )

    @described("This tenant's budgets.")
    async def budgets(self, info: Ctx) -> list[t.Budget]:
        return await resolvers.budgets(info.context, _own(info))

    @described("This tenant's anomaly incidents.")
    async def anomalies(self, info: Ctx, status: t.IncidentStatus | None = None) -> list[t.Anomaly]:
        return await resolvers.anomalies(info.context, _own(info), status)

    @described("This tenant's request log, newest first.")
    async def requests(
        self, info: Ctx, filter: t.RequestFilter | None = None, first: int = 50,
        after: str | None = None,
    ) -> t.RequestPage:  # fmt: skip
        return await resolvers.requests(info.context, _own(info), filter, first, after)

    @described(FINDINGS.replace("Requests", "This tenant's requests", 1))
    async def guardrail_findings(
        self, info: Ctx, key: str | None = None, detector: str | None = None,
        category: str | None = None, action: str | None = None, start: From = None,
        end: To = None, first: int = 50, after: str | None = None,
    ) -> findings.GuardrailFindingPage:  # fmt: skip
        asked = {"key": key, "detector": detector, "category": category, "action": action,
                 "from": start, "to": end}  # fmt: skip
        return await findings.guardrail_findings(info.context, _own(info), asked, first, after)

    @described("This tenant.")
    async def tenant(self, info: Ctx) -> t.Tenant:
        return (await resolvers.tenants(info.context, _own(info)))[0]

    @described("This tenant's API keys (never their secrets).")
    async def keys(self, info: Ctx) -> list[t.Key]:
        return await resolvers.keys(info.context, _own(info))

    @described("This tenant's response cache over [since, until) (default: this UTC month).")
    async def cache(
        self, info: Ctx, since: str | None = None, until: str | None = None
    ) -> t.CacheStats:
        return await resolvers.cache(info.context, _own(info), since, until)

    @described("This tenant's credits (null: its plan is not prepaid).")
    async def credits(self, info: Ctx) -> revenue.Credits | None:
        return await revenue.credits(info.context, _own(info), prepaid_only=False)

    @described("This tenant's invoice preview for a UTC month (default: this one).")
    async def invoice(self, info: Ctx, month: str | None = None) -> revenue.Invoice:
        return await revenue.invoice(info.context, _own(info), month)


class Schema(strawberry.Schema):
    """A schema with the limits, no field suggestions, and only unexpected errors logged."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            cause = error.original_error
            if cause is not None and not isinstance(cause, (FareboxError, GraphQLError)):
                log.error("GraphQL resolver failed: %r", cause, exc_info=cause)


def _config() -> StrawberryConfig:
    return StrawberryConfig(disable_field_suggestions=True, scalar_map=t.scalars())


def admin_schema() -> Schema:
    return Schema(query=AdminQuery, extensions=limits.extensions(), config=_config())


def tenant_schema() -> Schema:
    return Schema(query=TenantQuery, extensions=limits.extensions(), config=_config())
