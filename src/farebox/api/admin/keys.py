"""Admin endpoints of API keys: issue one for a tenant or a service, list a tenant's, change a
key's budgets and rate limits, revoke, pause and resume it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin.caps import Caller, bound, key_within_plan
from farebox.api.admin.params import AdminBody, PauseBody
from farebox.api.admin.workspaces import KeyMetadata
from farebox.api.context import Services
from farebox.core.records import DEFAULT_WORKSPACE
from farebox.errors import InvalidRequest
from farebox.gateway.budget_scope import validate_budgets
from farebox.gateway.rate_limits import validate_limits
from farebox.identity.tenancy import Tenancy, key_json
from farebox.identity.workspaces import WORKSPACE_ID, Workspaces


class KeyCreate(AdminBody):
    name: str = Field("default", min_length=1, max_length=128)
    expires_at: float | None = Field(None, description="Unix seconds")
    expires_in_s: float | None = Field(None, gt=0)
    workspace: str = Field(DEFAULT_WORKSPACE, min_length=1, max_length=64,
                           pattern=WORKSPACE_ID.pattern)  # fmt: skip
    metadata: KeyMetadata = Field(default_factory=dict)
    alert_threshold: int | None = Field(None, ge=1, le=100, description="Percent")


class KeyPatch(AdminBody):
    budgets: list[dict[str, Any]] | None = Field(None, max_length=100)
    rate_limits: list[dict[str, Any]] | None = Field(None, max_length=100)
    metadata: KeyMetadata | None = None
    alert_threshold: int | None = Field(None, ge=1, le=100, description="Percent; null: none")
    workspace: str | None = Field(None, min_length=1, max_length=64, pattern=WORKSPACE_ID.pattern)


class KeyRoutes:
    """The handlers of ``/tenants/{tenant_id}/keys``, ``/service-keys`` and ``/keys/{key_id}``."""

    def __init__(self, services: Services, tenancy: Tenancy, watch: AnomalyWatch) -> None:
        self.services = services
        self.tenancy = tenancy
        self.watch = watch
        self.workspaces = Workspaces(services.store, services.clock)

    def expiry(self, body: KeyCreate) -> float | None:
        if body.expires_in_s is not None:
            return self.tenancy.now() + body.expires_in_s
        return body.expires_at

    async def patch_key(self, key_id: str, body: KeyPatch, actor: Caller = None) -> dict[str, Any]:
        """Change a key's budgets or rate limits; a tenant_admin: only within its plan."""
        key = await self.tenancy.key(key_id)
        changes: dict[str, Any] = {}
        if body.budgets is not None:
            changes["budgets"] = validate_budgets(body.budgets)
        if body.rate_limits is not None:
            changes["rate_limits"] = validate_limits(body.rate_limits)
        if body.metadata is not None:
            changes["metadata"] = body.metadata
        if "alert_threshold" in body.model_fields_set:  # null: the key's own alert is off
            changes["alert_threshold"] = body.alert_threshold
        if body.workspace is not None:  # move the key to another workspace of its tenant
            if key.tenant_id is None:
                raise InvalidRequest("A service key has no workspace.", param="workspace")
            await self.workspaces.get(key.tenant_id, body.workspace)
            changes["workspace_id"] = body.workspace
        if not changes:
            raise InvalidRequest(
                "Nothing to change: send budgets, rate_limits, metadata, alert_threshold or "
                "workspace."
            )
        if bound(actor):
            tenant = await self.tenancy.tenant(key.tenant_id or "")
            key_within_plan(self.services, tenant, key, changes)
        updated = await self.services.store.update_key(key_id, changes)
        if "workspace_id" in changes:  # moved: unless the workspace was removed meanwhile
            back = {"workspace_id": key.workspace_id}
            await self.workspaces.still_there(
                updated, lambda: self.services.store.update_key(key_id, back)
            )
        return key_json(updated)

    async def create_key(self, tenant_id: str, body: KeyCreate | None = None) -> dict[str, Any]:
        body = body or KeyCreate()
        await self.workspaces.get(tenant_id, body.workspace)  # 404 unless it is
        key, raw = await self.tenancy.create_key(
            tenant_id, body.name, expires_at=self.expiry(body), workspace=body.workspace,
            metadata=body.metadata, alert_threshold=body.alert_threshold,
        )  # fmt: skip
        await self.workspaces.still_there(key, lambda: self.tenancy.revoke_key(key.id))
        return {**key_json(key), "key": raw}

    async def list_keys(self, tenant_id: str) -> dict[str, Any]:
        await self.tenancy.tenant(tenant_id)
        keys = await self.services.store.list_keys(tenant_id, "tenant")
        return {"object": "list", "data": [key_json(k) for k in keys]}

    async def create_service_key(self, body: KeyCreate | None = None) -> dict[str, Any]:
        body = body or KeyCreate(name="service")
        key, raw = await self.tenancy.create_key(
            None, body.name, kind="service", expires_at=self.expiry(body)
        )
        return {**key_json(key), "key": raw}

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        return key_json(await self.tenancy.revoke_key(key_id))

    async def pause_key(self, key_id: str, body: PauseBody | None = None) -> dict[str, Any]:
        reason = body.reason if body else None
        return key_json(await self.tenancy.set_key_paused(key_id, True, reason))

    async def resume_key(self, key_id: str) -> dict[str, Any]:
        key = await self.tenancy.set_key_paused(key_id, False)
        resolved = await self.watch.resumed(key.tenant_id or "", key_id)
        return {**key_json(key), "resolved_incidents": [i.id for i in resolved]}
