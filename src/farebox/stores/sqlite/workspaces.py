"""Tenants' workspaces in SQLite (the ``WorkspaceStore`` role): the ``workspaces`` table of
issue 14's migration, JSON columns as text. Each change bumps the auth epoch in its own
transaction, as tenant and key changes do."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from farebox.core.records import DEFAULT_WORKSPACE, Workspace
from farebox.errors import Conflict
from farebox.stores.sqlite.epoch_role import EpochRole
from farebox.stores.workspace_rows import (
    COLS,
    JSON_COLS,
    LIVE_KEYS,
    changed,
    implicit_default,
    values,
    with_default,
)

_SELECT = f"SELECT {','.join(COLS)} FROM workspaces WHERE tenant_id = ?"
_ONE = _SELECT + " AND id = ?"
_UPSERT = (
    f"INSERT INTO workspaces({','.join(COLS)}) VALUES ({','.join('?' * len(COLS))}) "
    "ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, "
    "budgets = excluded.budgets, rate_limits = excluded.rate_limits, metadata = excluded.metadata"
)
_INSERT = f"INSERT INTO workspaces({','.join(COLS)}) VALUES ({','.join('?' * len(COLS))})"
_LIVE = LIVE_KEYS.format(t="api_keys", p1="?", p2="?", p3="?")
_DELETE = "DELETE FROM workspaces WHERE tenant_id = ? AND id = ?"
_JSON_AT = tuple(COLS.index(c) for c in JSON_COLS)


def _row(w: Workspace) -> list[Any]:
    row = values(w)
    for i in _JSON_AT:
        row[i] = orjson.dumps(row[i]).decode()
    return row


def _workspace(row: Any) -> Workspace:
    cells = list(row)
    for i in _JSON_AT:
        cells[i] = orjson.loads(cells[i]) if cells[i] else ({} if COLS[i] == "metadata" else [])
    return Workspace(**dict(zip(COLS, cells, strict=True)))


class SQLiteWorkspaces(EpochRole):
    async def create_workspace(self, workspace: Workspace) -> None:
        row = _row(workspace)

        def write(db: sqlite3.Connection) -> int:
            if workspace.id == DEFAULT_WORKSPACE:
                raise Conflict(f"workspace {workspace.id!r} already exists")
            try:
                db.execute(_INSERT, row)
            except sqlite3.IntegrityError:
                raise Conflict(f"workspace {workspace.id!r} already exists") from None
            return self._bump(db)

        self._publish(await self._write(write))

    async def get_workspace(self, tenant_id: str, workspace_id: str) -> Workspace | None:
        rows = await self._read(lambda db: db.execute(_ONE, (tenant_id, workspace_id)).fetchall())
        if rows:
            return _workspace(rows[0])
        return implicit_default(tenant_id) if workspace_id == DEFAULT_WORKSPACE else None

    async def list_workspaces(self, tenant_id: str) -> list[Workspace]:
        rows = await self._read(lambda db: db.execute(_SELECT, (tenant_id,)).fetchall())
        return with_default(tenant_id, [_workspace(r) for r in rows])

    async def update_workspace(
        self, tenant_id: str, workspace_id: str, changes: dict[str, Any]
    ) -> Workspace:
        def write(db: sqlite3.Connection) -> tuple[Workspace, int]:
            found = db.execute(_ONE, (tenant_id, workspace_id)).fetchall()
            current = _workspace(found[0]) if found else None
            updated = changed(current, tenant_id, workspace_id, changes)
            db.execute(_UPSERT, _row(updated))
            return updated, self._bump(db)

        done: tuple[Workspace, int] = await self._write(write)
        self._publish(done[1])
        return done[0]

    async def delete_workspace(self, tenant_id: str, workspace_id: str) -> bool:
        if workspace_id == DEFAULT_WORKSPACE:
            return False

        return await self._change_one(_DELETE, (tenant_id, workspace_id))

    async def delete_workspace_if_empty(
        self, tenant_id: str, workspace_id: str, now: float
    ) -> tuple[bool, list[str]]:
        if workspace_id == DEFAULT_WORKSPACE:
            return False, []

        def write(db: sqlite3.Connection) -> tuple[int | None, list[str]]:
            live = [r[0] for r in db.execute(_LIVE, (tenant_id, workspace_id, now, now))]
            if live or db.execute(_DELETE, (tenant_id, workspace_id)).rowcount != 1:
                return None, live
            return self._bump(db), []

        epoch, live = await self._write(write)  # one write transaction: check and removal
        return self._published(epoch), live
