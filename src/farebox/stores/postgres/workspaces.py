"""Tenants' workspaces in PostgreSQL (the ``WorkspaceStore`` role): the ``workspaces`` table
of issue 14's migration, JSON columns as ``jsonb``. PostgreSQL alone keeps no auth epoch: the
scaled store bumps its shared one after each change (``WorkspacesThatBump``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from farebox.core.records import DEFAULT_WORKSPACE, Workspace
from farebox.errors import Conflict
from farebox.stores.workspace_rows import (
    COLS,
    LIVE_KEYS,
    changed,
    implicit_default,
    values,
    with_default,
)


class PostgresWorkspaces:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        cols = ",".join(f'"{c}"' for c in COLS)
        marks = ",".join(f"${i}" for i in range(1, len(COLS) + 1))
        table = f"{schema}.workspaces"
        self._insert = f"INSERT INTO {table}({cols}) VALUES ({marks})"
        self._upsert = (
            self._insert + " ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, "
            "budgets = excluded.budgets, rate_limits = excluded.rate_limits, "
            "metadata = excluded.metadata"
        )
        self._select = f"SELECT {cols} FROM {table} WHERE tenant_id = $1"
        self._one = self._select + " AND id = $2"
        self._lock = self._one + " FOR UPDATE"
        self._delete = f"DELETE FROM {table} WHERE tenant_id = $1 AND id = $2"
        # SHARE: waits for key writes in flight to commit and holds new ones off until the
        # removal commits, so the check below sees every key made into or moved to it
        self._hold_keys = f"LOCK TABLE {schema}.api_keys IN SHARE MODE"
        self._live = LIVE_KEYS.format(t=f"{schema}.api_keys", p1="$1", p2="$2", p3="$3")

    async def create_workspace(self, workspace: Workspace) -> None:
        if workspace.id == DEFAULT_WORKSPACE:
            raise Conflict(f"workspace {workspace.id!r} already exists")
        try:
            async with self._pool().acquire() as conn:
                await conn.execute(self._insert, *values(workspace))
        except asyncpg.UniqueViolationError:
            raise Conflict(f"workspace {workspace.id!r} already exists") from None

    async def get_workspace(self, tenant_id: str, workspace_id: str) -> Workspace | None:
        async with self._pool().acquire() as conn:
            row = await conn.fetchrow(self._one, tenant_id, workspace_id)
        if row is not None:
            return Workspace(**dict(row))
        return implicit_default(tenant_id) if workspace_id == DEFAULT_WORKSPACE else None

    async def list_workspaces(self, tenant_id: str) -> list[Workspace]:
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(self._select, tenant_id)
        return with_default(tenant_id, [Workspace(**dict(r)) for r in rows])

    async def update_workspace(
        self, tenant_id: str, workspace_id: str, changes: dict[str, Any]
    ) -> Workspace:
        async with self._pool().acquire() as conn, conn.transaction():
            row = await conn.fetchrow(self._lock, tenant_id, workspace_id)
            current = Workspace(**dict(row)) if row is not None else None
            updated = changed(current, tenant_id, workspace_id, changes)
            await conn.execute(self._upsert, *values(updated))
        return updated

    async def delete_workspace(self, tenant_id: str, workspace_id: str) -> bool:
        if workspace_id == DEFAULT_WORKSPACE:
            return False
        async with self._pool().acquire() as conn:
            status = await conn.execute(self._delete, tenant_id, workspace_id)
        return bool(status.endswith(" 1"))

    async def delete_workspace_if_empty(
        self, tenant_id: str, workspace_id: str, now: float
    ) -> tuple[bool, list[str]]:
        if workspace_id == DEFAULT_WORKSPACE:
            return False, []
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(self._hold_keys)
            live = [r["id"] for r in await conn.fetch(self._live, tenant_id, workspace_id, now)]
            if live:
                return False, live
            status = await conn.execute(self._delete, tenant_id, workspace_id)
        return bool(status.endswith(" 1")), []
