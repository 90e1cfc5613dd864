"""Account multiplication's sightings and claims in PostgreSQL (``stores.multiplication``;
the scaled store's too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from farebox.stores.multiplication import LINK, Sighting, Taken


class PostgresSightings:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        s = self._s = schema
        self._upsert = (
            f"INSERT INTO {s}.multiplication_sightings(client, tenant_id, key_id, seen_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (client, tenant_id, key_id) DO UPDATE SET "
            "seen_at = GREATEST(multiplication_sightings.seen_at, EXCLUDED.seen_at)"
        )
        self._claim = (
            f"INSERT INTO {s}.multiplication_claims(client, claimed_at) VALUES ($1, $2) "
            "ON CONFLICT (client) DO UPDATE SET claimed_at = EXCLUDED.claimed_at "
            "WHERE multiplication_claims.claimed_at < $3 RETURNING client"
        )

    async def add(self, rows: Sequence[Sighting]) -> None:
        # one row per (client, tenant, key), in one order: concurrent writers never deadlock
        latest: dict[tuple[str, str, str], float] = {}
        for r in rows:
            slot = (r.client, r.tenant_id, r.key_id)
            latest[slot] = max(latest.get(slot, r.seen_at), r.seen_at)
        values = sorted((*slot, at) for slot, at in latest.items())
        if values:
            async with self._pool().acquire() as conn, conn.transaction():
                await conn.executemany(self._upsert, values)

    async def crowded(
        self, since: float, more_than: int, touched: float | None = None
    ) -> list[str]:
        s = self._s
        sql = (
            f"SELECT client FROM {s}.multiplication_sightings WHERE seen_at >= $1 "
            f"AND tenant_id <> $4 AND client IN (SELECT client FROM {s}.multiplication_sightings "
            "WHERE seen_at >= $2) GROUP BY client HAVING COUNT(DISTINCT tenant_id) > $3 "
            "ORDER BY client"
        )
        rows = await self._pool().fetch(sql, since, since if touched is None else touched,
                                        more_than, LINK)  # fmt: skip
        return [str(r[0]) for r in rows]

    async def sightings(self, client: str, since: float) -> list[Sighting]:
        sql = (
            f"SELECT client, tenant_id, key_id, seen_at FROM {self._s}.multiplication_sightings "
            "WHERE client = $1 AND seen_at >= $2 AND tenant_id <> $3 "
            "ORDER BY seen_at, tenant_id, key_id"
        )
        return [Sighting(*r) for r in await self._pool().fetch(sql, client, since, LINK)]

    async def linked(self, client: str, since: float) -> list[str]:
        sql = (
            f"SELECT key_id FROM {self._s}.multiplication_sightings WHERE client = $1 "
            "AND tenant_id = $2 AND seen_at >= $3 ORDER BY key_id"
        )
        return [str(r[0]) for r in await self._pool().fetch(sql, client, LINK, since)]

    async def claim(self, client: str, at: float, since: float) -> bool:
        return await self.claim_all([client], at, since)

    async def claim_all(
        self, clients: Sequence[str], at: float, since: float, linked: Sequence[str] = ()
    ) -> bool:
        """One transaction, the clients and the linked ones in one order (concurrent groups
        never deadlock): one of ``clients`` claimed already, by a transaction before or one
        this one waited for, rolls back the group's claims; a linked one is skipped."""
        must = set(clients)
        try:
            async with self._pool().acquire() as conn, conn.transaction():
                for client in sorted(must.union(linked)):
                    taken = await conn.fetchval(self._claim, client, at, since) is None
                    if taken and client in must:
                        raise Taken(client)  # leaves the transaction: rolled back
        except Taken:
            return False
        return True

    async def prune(self, before: float) -> None:
        s = self._s
        await self._pool().execute(
            f"DELETE FROM {s}.multiplication_sightings WHERE seen_at < $1", before
        )
        await self._pool().execute(
            f"DELETE FROM {s}.multiplication_claims WHERE claimed_at < $1", before
        )
