"""Admin endpoints of admin keys (the owner's alone): create one with a role (its secret
answered once), list them, revoke one."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from farebox.api.admin.params import AdminBody
from farebox.api.context import Services
from farebox.core.records import AdminRole
from farebox.identity.admin_keys import AdminKeys, admin_key_json
from farebox.identity.tenancy import TENANT_ID, Tenancy


class AdminKeyCreate(AdminBody):
    name: str = Field(min_length=1, max_length=128)
    role: AdminRole
    tenant: str | None = Field(
        None, min_length=1, max_length=64, pattern=TENANT_ID.pattern,
        description="The tenant of a tenant_admin key (required for it, refused otherwise).",
    )  # fmt: skip


class AdminKeyRoutes:
    """The handlers of ``/admin-keys`` and ``/admin-keys/{key_id}``."""

    def __init__(self, services: Services, tenancy: Tenancy) -> None:
        self.keys = AdminKeys(services.store, services.secret, tenancy.now)

    async def create(self, body: AdminKeyCreate) -> dict[str, Any]:
        """A new admin key; ``key`` is its secret, shown this once."""
        key, raw = await self.keys.create(body.name, body.role, body.tenant)
        return {**admin_key_json(key), "key": raw}

    async def list(self) -> dict[str, Any]:
        """Every admin key, revoked ones included (never a secret)."""
        return {"object": "list", "data": [admin_key_json(k) for k in await self.keys.list()]}

    async def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke an admin key: refused from the next request on, in every worker."""
        return admin_key_json(await self.keys.revoke(key_id))
