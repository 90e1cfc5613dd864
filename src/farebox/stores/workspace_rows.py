"""What every ``WorkspaceStore`` shares: the columns of the ``workspaces`` table, the
``default`` workspace every tenant has without it being stored, and the scaled store's
wrapper that bumps its shared auth epoch after each change."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from farebox.core.records import DEFAULT_WORKSPACE, Workspace
from farebox.errors import NotFound

COLS = ("tenant_id", "id", "name", "created_at", "budgets", "rate_limits", "metadata")
JSON_COLS = ("budgets", "rate_limits", "metadata")
CHANGEABLE = frozenset({"name", "budgets", "rate_limits", "metadata"})


def implicit_default(tenant_id: str) -> Workspace:
    """The ``default`` workspace of a tenant that never stored it: no overrides."""
    return Workspace(tenant_id=tenant_id, id=DEFAULT_WORKSPACE, name="Default", created_at=0.0)


def with_default(tenant_id: str, stored: Sequence[Workspace]) -> list[Workspace]:
    """The stored workspaces, and ``default`` unless stored; by id."""
    found = list(stored)
    if not any(w.id == DEFAULT_WORKSPACE for w in found):
        found.append(implicit_default(tenant_id))
    return sorted(found, key=lambda w: w.id)


def check(changes: dict[str, Any]) -> None:
    """An update changes only what ``CHANGEABLE`` names; anything else is a programming error."""
    unknown = set(changes) - CHANGEABLE
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")


def changed(current: Workspace | None, tenant_id: str, workspace_id: str,
            changes: dict[str, Any]) -> Workspace:  # fmt: skip
    """``current`` with ``changes`` applied; ``default`` is made up when not stored, any
    other missing workspace is ``NotFound``."""
    check(changes)
    if current is None:
        if workspace_id != DEFAULT_WORKSPACE:
            raise NotFound(
                f"Workspace {workspace_id!r} of tenant {tenant_id!r} not found.",
                code="workspace_not_found",
            )
        current = implicit_default(tenant_id)
    return dataclasses.replace(current, **changes)


# a workspace's live tenant keys (``ApiKey.usable_at``); ``{t}`` the table, ``{p}`` a parameter
LIVE_KEYS = (
    "SELECT id FROM {t} WHERE tenant_id = {p1} AND workspace_id = {p2} AND kind = 'tenant' "
    "AND (revoked_at IS NULL OR revoked_at > {p3}) AND (expires_at IS NULL OR expires_at > {p3}) "
    "ORDER BY created_at, id"
)


def values(w: Workspace) -> list[Any]:
    return [getattr(w, c) for c in COLS]


class WorkspacesThatBump:
    """A ``WorkspaceStore`` whose every change is followed by ``bump`` (the scaled store's
    shared auth epoch, which lives beside its database)."""

    def __init__(self, inner: Any, bump: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._bump = bump

    async def create_workspace(self, workspace: Workspace) -> None:
        await self._inner.create_workspace(workspace)
        await self._bump()

    async def get_workspace(self, tenant_id: str, workspace_id: str) -> Workspace | None:
        found: Workspace | None = await self._inner.get_workspace(tenant_id, workspace_id)
        return found

    async def list_workspaces(self, tenant_id: str) -> list[Workspace]:
        return list(await self._inner.list_workspaces(tenant_id))

    async def update_workspace(
        self, tenant_id: str, workspace_id: str, changes: dict[str, Any]
    ) -> Workspace:
        updated: Workspace = await self._inner.update_workspace(tenant_id, workspace_id, changes)
        await self._bump()
        return updated

    async def delete_workspace(self, tenant_id: str, workspace_id: str) -> bool:
        gone = bool(await self._inner.delete_workspace(tenant_id, workspace_id))
        if gone:
            await self._bump()
        return gone

    async def delete_workspace_if_empty(
        self, tenant_id: str, workspace_id: str, now: float
    ) -> tuple[bool, list[str]]:
        gone, live = await self._inner.delete_workspace_if_empty(tenant_id, workspace_id, now)
        if gone:
            await self._bump()
        return bool(gone), list(live)
