"""A ``tenant_admin``'s changes held to its plan (``farebox.identity.role_caps``): the plan's
budgets and rate limits as the gateway has them now (a reloaded config included), with the
tenant's and the key's own in force."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import Depends, Request

from farebox.api.context import Services
from farebox.core.records import ApiKey, Tenant
from farebox.identity.role_caps import (
    budget_ident,
    check_budgets,
    check_limits,
    check_tenant_fields,
)
from farebox.identity.roles import AdminActor


async def caller(request: Request) -> AdminActor | None:
    """The admin actor of the request (set by ``access``), for handlers that care."""
    actor = getattr(request.state, "admin_actor", None)
    return actor if isinstance(actor, AdminActor) else None


Caller = Annotated[AdminActor | None, Depends(caller)]


def bound(actor: AdminActor | None) -> bool:
    """Held to its plan: a tenant_admin."""
    return actor is not None and actor.tenant_bound


def _plan_budgets(services: Services, tenant: Tenant, proposed: list[dict[str, Any]]) -> list[Any]:
    bare = replace(tenant, budgets=[])  # the plan's own, without the tenant's overrides
    plan = services.gateway.plan_name(tenant)
    found = (services.budgets.base_budget(bare, plan, *budget_ident(b)) for b in proposed)
    return [b for b in found if b is not None]


def tenant_within_plan(services: Services, tenant: Tenant, changes: dict[str, Any]) -> None:
    """Refuse a tenant_admin's change of its tenant beyond what its plan allows."""
    check_tenant_fields(changes)
    plan = services.gateway.plan_name(tenant)
    if "budgets" in changes:
        planned = _plan_budgets(services, tenant, changes["budgets"])
        check_budgets(changes["budgets"], planned, tenant.budgets, "budgets")
    if "rate_limits" in changes:
        planned_limits = services.gateway.limits(plan)
        check_limits(changes["rate_limits"], planned_limits, tenant.rate_limits, "rate_limits")


def key_within_plan(
    services: Services, tenant: Tenant, key: ApiKey, changes: dict[str, Any]
) -> None:
    """Refuse a tenant_admin's change of a key's budgets or limits beyond its plan's (and
    its tenant's) in force."""
    plan = services.gateway.plan_name(tenant)
    if "budgets" in changes:
        planned = [*_plan_budgets(services, tenant, changes["budgets"]), *tenant.budgets]
        check_budgets(changes["budgets"], planned, key.budgets, "budgets")
    if "rate_limits" in changes:
        planned_limits = [*services.gateway.limits(plan), *tenant.rate_limits]
        check_limits(changes["rate_limits"], planned_limits, key.rate_limits, "rate_limits")
