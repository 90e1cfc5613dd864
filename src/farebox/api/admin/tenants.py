"""Admin endpoints of tenants: create, list, read and change one, the limits in force on it,
and pausing and resuming it."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, Field

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin.caps import Caller, bound, tenant_within_plan, validated
from farebox.api.admin.params import AdminBody, PauseBody
from farebox.api.context import Services
from farebox.gateway.routing_table import policy_json
from farebox.identity.tenancy import TENANT_ID, Tenancy, tenant_json


def _encodable(value: dict[str, Any]) -> dict[str, Any]:
    try:
        if len(orjson.dumps(value)) > 16_384:
            raise ValueError("metadata must encode to at most 16 KiB of JSON")
    except orjson.JSONEncodeError:
        raise ValueError(
            "metadata must be JSON-encodable: integers within 64 bits, nested at most 255 levels"
        ) from None
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_encodable)]


class TenantCreate(AdminBody):
    id: str = Field(min_length=1, max_length=64, pattern=TENANT_ID.pattern)
    name: str | None = Field(None, max_length=256)
    plan: str | None = None
    metadata: Metadata = Field(default_factory=dict)


class BillingIds(AdminBody):
    stripe_customer_id: str | None = None
    lago_external_subscription_id: str | None = None
    lago_external_customer_id: str | None = None  # Lago wallet grants (billing webhooks)
    metronome_customer_id: str | None = None
    openmeter_subject: str | None = None


class TenantPatch(AdminBody):
    name: str | None = Field(None, max_length=256)
    plan: str | None = None
    billing: BillingIds | None = None
    metadata: Metadata | None = None
    budgets: list[dict[str, Any]] | None = Field(None, max_length=100)
    rate_limits: list[dict[str, Any]] | None = Field(None, max_length=100)


def _changes(body: TenantPatch) -> dict[str, Any]:
    """The fields a PATCH sets, with budgets and rate limits validated."""
    changes = body.model_dump(exclude_unset=True)
    if "billing" in changes and changes["billing"] is not None:
        changes["billing"] = {k: v for k, v in changes["billing"].items() if v is not None}
    return validated(changes)


class TenantRoutes:
    """The handlers of ``/tenants`` and ``/tenants/{tenant_id}`` (keys and budgets aside)."""

    def __init__(self, services: Services, tenancy: Tenancy, watch: AnomalyWatch) -> None:
        self.services = services
        self.tenancy = tenancy
        self.watch = watch
        self.default_plan = services.settings.file.default_plan or "default"

    async def create_tenant(self, body: TenantCreate) -> dict[str, Any]:
        tenant = await self.tenancy.create_tenant(
            body.id, body.name, body.plan or self.default_plan, body.metadata
        )
        return tenant_json(tenant)

    async def list_tenants(self) -> dict[str, Any]:
        tenants = await self.services.store.list_tenants()
        return {"object": "list", "data": [tenant_json(t) for t in tenants]}

    async def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        return tenant_json(await self.tenancy.tenant(tenant_id))

    async def patch_tenant(
        self, tenant_id: str, body: TenantPatch, actor: Caller = None
    ) -> dict[str, Any]:
        """Change a tenant; a tenant_admin: only within its plan (``identity.role_caps``)."""
        changes = _changes(body)
        if bound(actor):
            tenant_within_plan(self.services, await self.tenancy.tenant(tenant_id), changes)
        return tenant_json(await self.tenancy.update_tenant(tenant_id, changes))

    async def tenant_limits(self, tenant_id: str) -> dict[str, Any]:
        """The plan policy and the rate limits in force: tenant-wide, for each workspace and
        for each key (in its workspace)."""
        tenant = await self.tenancy.tenant(tenant_id)
        listed = await self.services.store.list_keys(tenant_id, "tenant")
        keys = [k for k in listed if not k.revoked_at]
        spaces = {w.id: w for w in await self.services.store.workspaces.list_workspaces(tenant_id)}
        gateway = self.services.gateway
        plan = gateway.plan_name(tenant)
        return {
            "tenant": tenant_id,
            "plan": plan,
            "policy": policy_json(gateway.plans()[plan]),
            "rate_limits": gateway.limits(plan, tenant),
            "workspaces": [
                {"id": w.id, "rate_limits": gateway.limits(plan, tenant, None, w)}
                for w in spaces.values()
            ],
            "keys": [
                {
                    "id": k.id,
                    "rate_limits": gateway.limits(plan, tenant, k, spaces.get(k.workspace_id)),
                }
                for k in keys
            ],
        }

    async def pause_tenant(self, tenant_id: str, body: PauseBody | None = None) -> dict[str, Any]:
        reason = body.reason if body else None
        return tenant_json(await self.tenancy.set_tenant_paused(tenant_id, True, reason))

    async def resume_tenant(self, tenant_id: str) -> dict[str, Any]:
        tenant = await self.tenancy.set_tenant_paused(tenant_id, False)
        resolved = await self.watch.resumed(tenant_id)
        return {**tenant_json(tenant), "resolved_incidents": [i.id for i in resolved]}
