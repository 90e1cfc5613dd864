"""Admin endpoints of budgets: a tenant's budget states, a temporary increase of one, and the
threshold alerts sent."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from farebox.api.admin.params import AdminBody, TenantFilter
from farebox.api.context import Services
from farebox.errors import InvalidRequest
from farebox.gateway.budget_scope import budget_ident, state_json, validate_budgets
from farebox.identity.tenancy import Tenancy, tenant_json

BudgetScope = Literal["tenant", "key", "feature", "user"]


class BudgetIncrease(AdminBody):
    scope: BudgetScope = "tenant"
    period: str = "month"
    name: str | None = None
    amount_usd: str = Field(pattern=r"^\s*\d+(\.\d+)?\s*$")
    expires_at: float | None = None
    expires_in_s: float | None = Field(None, gt=0)


class BudgetRoutes:
    """The handlers of ``/tenants/{tenant_id}/budgets``, its increases, and ``/budget-alerts``."""

    def __init__(self, services: Services, tenancy: Tenancy) -> None:
        self.services = services
        self.tenancy = tenancy

    async def tenant_budgets(self, tenant_id: str) -> dict[str, Any]:
        tenant = await self.tenancy.tenant(tenant_id)
        listed = await self.services.store.list_keys(tenant_id, "tenant")
        keys = [k for k in listed if not k.revoked_at]
        plan = self.services.gateway.plan_name(tenant)
        spaces = await self.services.store.workspaces.list_workspaces(tenant_id)
        states = await self.services.budgets.tenant_states(tenant, plan, keys, spaces)
        return {"object": "list", "data": [state_json(s) for s in states]}

    async def increase_budget(self, tenant_id: str, body: BudgetIncrease) -> dict[str, Any]:
        tenant = await self.tenancy.tenant(tenant_id)
        until = self.tenancy.now() + body.expires_in_s if body.expires_in_s else body.expires_at
        plan = self.services.gateway.plan_name(tenant)
        base = self.services.budgets.base_budget(tenant, plan, body.scope, body.period, body.name)
        if base is None:
            raise InvalidRequest(
                f"Tenant {tenant_id!r} has no {body.scope} {body.period} budget to increase.",
                param="period",
            )
        raised = {**base, "increase_usd": body.amount_usd.strip(), "increase_until": until}
        wanted = (body.scope, body.period, body.name)
        rest = [b for b in tenant.budgets if budget_ident(b) != wanted]
        budgets = validate_budgets([*rest, raised])
        return tenant_json(await self.tenancy.update_tenant(tenant_id, {"budgets": budgets}))

    async def budget_alerts(self, tenant: TenantFilter = None) -> dict[str, Any]:
        return {"object": "list", "data": await self.services.store.alerts(tenant)}
