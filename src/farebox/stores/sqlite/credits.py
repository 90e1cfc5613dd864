"""Credit grants in SQLite (the ``CreditStore`` role). Money columns are TEXT holding exact
integers (a grant is never rounded, whatever its size)."""

from __future__ import annotations

import sqlite3
from typing import Any

from farebox.core.credits import CreditGrant
from farebox.stores.credit_rows import (
    BY_KEY,
    BY_TENANT,
    INSERT,
    UPDATE,
    expiry,
    grant_of,
    same,
    values,
)
from farebox.stores.sqlite.epoch_role import EpochRole

MIGRATION = """
CREATE TABLE credit_grants (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    source TEXT NOT NULL,
    opened_at_burn TEXT NOT NULL,
    closed_at_burn TEXT,
    forfeited TEXT,
    note TEXT,
    pending INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, key)
);
"""


def _text(row: list[Any]) -> list[Any]:
    return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in row]


class SQLiteCredits(EpochRole):
    async def grant_credits(self, grant: CreditGrant) -> tuple[CreditGrant, bool]:
        row = _text(values(grant))

        def write(db: sqlite3.Connection) -> tuple[CreditGrant, int | None]:
            found = db.execute(BY_KEY, (grant.tenant_id, grant.key)).fetchone()
            if found is not None:
                return same(grant_of(found), grant), None
            db.execute(INSERT, row)
            return grant, self._bump(db)

        stored, epoch = await self._write(write)
        return stored, self._published(epoch)

    async def credit_grants(self, tenant_id: str) -> list[CreditGrant]:
        rows = await self._read(lambda db: db.execute(BY_TENANT, (tenant_id,)).fetchall())
        return [grant_of(r) for r in rows]

    async def update_grant(self, before: CreditGrant, after: CreditGrant) -> bool:
        params = (*expiry(after), before.tenant_id, before.id, *expiry(before))
        return await self._change_one(UPDATE, params)
