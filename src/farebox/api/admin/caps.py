"""A ``tenant_admin``'s changes held to its plan (``farebox.identity.role_caps``): the plan's
budgets and rate limits as the gateway has them now (a reloaded config included), with the
tenant's and the key's own in force."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import Depends, Request

from farebox.api.context import Services
from farebox.core.records import ApiKey, Tenant, Workspace
from farebox.gateway.budget_scope import validate_budgets
from farebox.gateway.rate_limits import validate_limits
from farebox.identity.role_caps import (
    budget_ident,
    check_budgets,
    check_limits,
    check_tenant_fields,
    generic_ident,
)
from farebox.identity.roles import AdminActor


async def caller(request: Request) -> AdminActor | None:
    """The admin actor of the request (set by ``access``), for handlers that care."""
    actor = getattr(request.state, "admin_actor", None)
    return actor if isinstance(actor, AdminActor) else None


Caller = Annotated[AdminActor | None, Depends(caller)]


def validated(changes: dict[str, Any]) -> dict[str, Any]:
    """The fields a body sets (``None`` ones dropped), its budgets and rate limits validated."""
    out = {k: v for k, v in changes.items() if v is not None}
    if "budgets" in out:
        out["budgets"] = validate_budgets(out["budgets"])
    if "rate_limits" in out:
        out["rate_limits"] = validate_limits(out["rate_limits"])
    return out


def bound(actor: AdminActor | None) -> bool:
    """Held to its plan: a tenant_admin."""
    return actor is not None and actor.tenant_bound


def _plan_budgets(services: Services, tenant: Tenant, proposed: list[dict[str, Any]]) -> list[Any]:
    """The plan's budgets of the proposed idents, and for a named one the plan's unnamed one
    of its scope and period too (a named budget replaces that counter's generic one)."""
    bare = replace(tenant, budgets=[])  # the plan's own, without the tenant's overrides
    plan = services.gateway.plan_name(tenant)
    idents = {budget_ident(b) for b in proposed}
    idents |= {generic_ident(i) for i in idents}
    found = (services.budgets.base_budget(bare, plan, *ident) for ident in sorted(idents, key=str))
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


def workspace_within_plan(
    services: Services, tenant: Tenant, current: Workspace | None, changes: dict[str, Any]
) -> None:
    """Refuse a tenant_admin's workspace overrides beyond its plan's, its tenant's and the
    workspace's own in force (``current``; None for a new one): a workspace's key, user and
    feature budgets and key, user and ip rate limits replace the plan's of the same ident."""
    plan = services.gateway.plan_name(tenant)
    if "budgets" in changes:
        planned = [*_plan_budgets(services, tenant, changes["budgets"]), *tenant.budgets]
        own = current.budgets if current is not None else []
        check_budgets(changes["budgets"], planned, own, "budgets")
    if "rate_limits" in changes:
        planned_limits = [*services.gateway.limits(plan), *tenant.rate_limits]
        own_limits = current.rate_limits if current is not None else []
        check_limits(changes["rate_limits"], planned_limits, own_limits, "rate_limits")
