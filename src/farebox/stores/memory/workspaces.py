"""Tenants' workspaces in memory (the ``WorkspaceStore`` role)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from farebox.core.records import DEFAULT_WORKSPACE, ApiKey, Workspace
from farebox.errors import Conflict
from farebox.stores.workspace_rows import changed, implicit_default, with_default


class MemoryWorkspaces:
    def __init__(
        self, bump: Callable[[], None], keys: Callable[[], Iterable[ApiKey]] = tuple
    ) -> None:
        self._rows: dict[tuple[str, str], Workspace] = {}
        self._bump = bump  # the auth epoch
        self._keys = keys  # the store's keys, as they are now

    async def create_workspace(self, workspace: Workspace) -> None:
        slot = (workspace.tenant_id, workspace.id)
        if slot in self._rows or workspace.id == DEFAULT_WORKSPACE:
            raise Conflict(f"workspace {workspace.id!r} already exists")
        self._rows[slot] = workspace
        self._bump()

    async def get_workspace(self, tenant_id: str, workspace_id: str) -> Workspace | None:
        found = self._rows.get((tenant_id, workspace_id))
        if found is None and workspace_id == DEFAULT_WORKSPACE:
            return implicit_default(tenant_id)
        return found

    async def list_workspaces(self, tenant_id: str) -> list[Workspace]:
        return with_default(tenant_id, [w for (t, _), w in self._rows.items() if t == tenant_id])

    async def update_workspace(
        self, tenant_id: str, workspace_id: str, changes: dict[str, Any]
    ) -> Workspace:
        current = self._rows.get((tenant_id, workspace_id))
        updated = changed(current, tenant_id, workspace_id, changes)
        self._rows[(tenant_id, workspace_id)] = updated
        self._bump()
        return updated

    async def delete_workspace(self, tenant_id: str, workspace_id: str) -> bool:
        if workspace_id == DEFAULT_WORKSPACE:
            return False
        gone = self._rows.pop((tenant_id, workspace_id), None) is not None
        if gone:
            self._bump()
        return gone

    async def delete_workspace_if_empty(
        self, tenant_id: str, workspace_id: str, now: float
    ) -> tuple[bool, list[str]]:
        live = sorted(
            (k for k in self._keys() if k.tenant_id == tenant_id and k.kind == "tenant"
             and k.workspace_id == workspace_id and k.usable_at(now)),
            key=lambda k: (k.created_at, k.id),
        )  # fmt: skip
        # no await from the check to the removal: one step of the event loop
        if live:
            return False, [k.id for k in live]
        return await self.delete_workspace(tenant_id, workspace_id), []
