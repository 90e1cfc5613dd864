"""Credit grants in PostgreSQL (the ``CreditStore`` role). Money is ``NUMERIC(38, 0)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farebox.core.credits import CreditGrant
from farebox.stores.credit_rows import COLS, grant_of, same, values

MIGRATION = """
CREATE TABLE {s}.credit_grants (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount NUMERIC(38, 0) NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    source TEXT NOT NULL,
    opened_at_burn NUMERIC(38, 0) NOT NULL,
    closed_at_burn NUMERIC(38, 0),
    forfeited NUMERIC(38, 0),
    note TEXT,
    pending BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (tenant_id, key)
);
"""


class PostgresCredits:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        cols = ",".join(COLS)
        marks = ",".join(f"${i}" for i in range(1, len(COLS) + 1))
        self._insert = (
            f"INSERT INTO {schema}.credit_grants({cols}) VALUES ({marks}) "
            "ON CONFLICT (tenant_id, key) DO NOTHING RETURNING id"
        )
        select = f"SELECT {cols} FROM {schema}.credit_grants WHERE tenant_id = $1 "
        self._by_key = select + "AND key = $2"
        self._by_tenant = select + "ORDER BY created_at, id"
        self._update = (
            f"UPDATE {schema}.credit_grants SET closed_at_burn = $1, forfeited = $2, "
            "pending = $3 WHERE tenant_id = $4 AND id = $5 AND closed_at_burn IS NOT DISTINCT "
            "FROM $6::numeric AND forfeited IS NOT DISTINCT FROM $7::numeric AND pending = $8"
        )

    async def grant_credits(self, grant: CreditGrant) -> tuple[CreditGrant, bool]:
        async with self._pool().acquire() as conn:
            made = await conn.fetchval(self._insert, *values(grant))
            if made is not None:
                return grant, True
            found = await conn.fetchrow(self._by_key, grant.tenant_id, grant.key)
        return same(grant_of(tuple(found)), grant), False

    async def credit_grants(self, tenant_id: str) -> list[CreditGrant]:
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(self._by_tenant, tenant_id)
        return [grant_of(tuple(r)) for r in rows]

    async def update_grant(self, before: CreditGrant, after: CreditGrant) -> bool:
        async with self._pool().acquire() as conn:
            done = await conn.execute(
                self._update, after.closed_at_burn, after.forfeited, after.pending,
                before.tenant_id, before.id, before.closed_at_burn, before.forfeited,
                before.pending,
            )  # fmt: skip
        return bool(done == "UPDATE 1")
