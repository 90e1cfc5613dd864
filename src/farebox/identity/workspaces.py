"""Workspaces (a tenant's teams or projects), shared by the admin API and the CLI: create,
list, read, change and delete them. Every tenant has the ``default`` workspace (keys made
before workspaces belong to it); it cannot be deleted, and no workspace can while it has live
keys. Budgets and rate limits come here validated (``farebox.api.admin.workspaces``); what is
checked here is what only a workspace has: which scopes may be set on one."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from farebox.core.records import DEFAULT_WORKSPACE, ApiKey, Workspace
from farebox.errors import Conflict, InvalidRequest, NotFound
from farebox.stores.base import AccountStore, HasWorkspaces

WORKSPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # like a tenant id
# what a workspace's overrides may name: its own counters and those of its keys and users,
# never the tenant's (a workspace cannot raise its tenant's cap)
BUDGET_SCOPES = ("workspace", "key", "feature", "user")
LIMIT_SCOPES = ("workspace", "key", "user", "ip")


class WorkspaceAdminStore(AccountStore, HasWorkspaces, Protocol):
    """What workspace administration uses: tenants and keys, and the workspaces."""


def check_scopes(items: Sequence[Mapping[str, Any]], allowed: tuple[str, ...], what: str,
                 default: str) -> None:  # fmt: skip
    for i, item in enumerate(items):
        scope = item.get("scope", default)
        if scope not in allowed:
            raise InvalidRequest(
                f"{what}[{i}]: a workspace's {what} may have scope {', '.join(allowed)}, "
                f"not {scope!r} (set tenant-wide ones on the tenant)",
                param=f"{what}[{i}].scope",
            )


def check_overrides(changes: Mapping[str, Any]) -> None:
    """A workspace's budgets and rate limits name only scopes it may override."""
    check_scopes(changes.get("budgets") or (), BUDGET_SCOPES, "budgets", "tenant")
    check_scopes(changes.get("rate_limits") or (), LIMIT_SCOPES, "rate_limits", "key")


class Workspaces:
    def __init__(self, store: WorkspaceAdminStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def _tenant(self, tenant_id: str) -> None:
        if await self._store.get_tenant(tenant_id) is None:
            raise NotFound(f"Tenant {tenant_id!r} not found.", code="tenant_not_found")

    async def create(
        self,
        tenant_id: str,
        workspace_id: str,
        name: str | None = None,
        *,
        budgets: Sequence[Mapping[str, Any]] = (),
        rate_limits: Sequence[Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> Workspace:
        if not WORKSPACE_ID.match(workspace_id):
            raise InvalidRequest(
                "Workspace id must be 1-64 characters of letters, digits, '.', '_' or '-'.",
                param="id",
            )
        await self._tenant(tenant_id)
        check_overrides({"budgets": budgets, "rate_limits": rate_limits})
        workspace = Workspace(
            tenant_id=tenant_id,
            id=workspace_id,
            name=name or workspace_id,
            created_at=self._clock(),
            budgets=[dict(b) for b in budgets],
            rate_limits=[dict(r) for r in rate_limits],
            metadata=dict(metadata or {}),
        )
        try:
            await self._store.workspaces.create_workspace(workspace)
        except Conflict:
            raise Conflict(
                f"Tenant {tenant_id!r} already has a workspace {workspace_id!r}.",
                code="workspace_exists",
            ) from None
        return workspace

    async def all(self, tenant_id: str) -> list[Workspace]:
        await self._tenant(tenant_id)
        return await self._store.workspaces.list_workspaces(tenant_id)

    async def get(self, tenant_id: str, workspace_id: str) -> Workspace:
        await self._tenant(tenant_id)
        found = await self._store.workspaces.get_workspace(tenant_id, workspace_id)
        if found is None:
            raise NotFound(
                f"Workspace {workspace_id!r} of tenant {tenant_id!r} not found.",
                code="workspace_not_found",
            )
        return found

    async def update(self, tenant_id: str, workspace_id: str, changes: dict[str, Any]) -> Workspace:
        await self.get(tenant_id, workspace_id)
        check_overrides(changes)
        return await self._store.workspaces.update_workspace(tenant_id, workspace_id, changes)

    async def delete(self, tenant_id: str, workspace_id: str) -> Workspace:
        """Remove it unless a key of it is live: the check and the removal are one store
        transaction (``delete_workspace_if_empty``), so no key made into it or moved there
        meanwhile is left in a removed workspace."""
        found = await self.get(tenant_id, workspace_id)
        if workspace_id == DEFAULT_WORKSPACE:
            raise Conflict("The default workspace cannot be deleted.", code="workspace_is_default")
        gone, live = await self._store.workspaces.delete_workspace_if_empty(
            tenant_id, workspace_id, self._clock()
        )
        if live:
            raise Conflict(
                f"Workspace {workspace_id!r} still has {len(live)} live key(s) "
                f"({', '.join(live[:5])}): revoke them first.",
                code="workspace_has_keys",
            )
        if not gone:  # removed meanwhile by another call
            raise NotFound(
                f"Workspace {workspace_id!r} of tenant {tenant_id!r} not found.",
                code="workspace_not_found",
            )
        return found

    async def still_there(self, key: ApiKey, undo: Callable[[], Awaitable[object]]) -> None:
        """After ``key`` was made into or moved to its workspace, which was looked up before:
        when that workspace was removed meanwhile (``delete`` saw no live key of it yet),
        ``undo`` (revoke the key, move it back) and answer the workspace's 404."""
        if key.tenant_id is None or key.workspace_id == DEFAULT_WORKSPACE:
            return
        if await self._store.workspaces.get_workspace(key.tenant_id, key.workspace_id) is None:
            await undo()
            await self.get(key.tenant_id, key.workspace_id)  # raises its 404


def workspace_json(workspace: Workspace) -> dict[str, Any]:
    return {
        "object": "workspace",
        "id": workspace.id,
        "tenant": workspace.tenant_id,
        "name": workspace.name,
        "created_at": workspace.created_at,
        "budgets": workspace.budgets,
        "rate_limits": workspace.rate_limits,
        "metadata": workspace.metadata,
    }
