"""Account multiplication's sightings and claims in SQLite (``stores.multiplication``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from farebox.stores.multiplication import LINK, Sighting, Taken
from farebox.stores.sqlite.conn import Runner

_UPSERT = (
    "INSERT INTO multiplication_sightings(client, tenant_id, key_id, seen_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT(client, tenant_id, key_id) DO UPDATE SET "
    "seen_at = MAX(seen_at, excluded.seen_at)"
)
_CLAIM = (
    "INSERT INTO multiplication_claims(client, claimed_at) VALUES (?, ?) "
    "ON CONFLICT(client) DO UPDATE SET claimed_at = excluded.claimed_at "
    "WHERE multiplication_claims.claimed_at < ?"
)


class SQLiteSightings:
    def __init__(self, write: Runner[Any], read: Runner[Any]) -> None:
        self._write = write  # runs a function in a write transaction
        self._read = read

    async def add(self, rows: Sequence[Sighting]) -> None:
        values = [(r.client, r.tenant_id, r.key_id, r.seen_at) for r in rows]

        def write(db: sqlite3.Connection) -> None:
            db.executemany(_UPSERT, values)

        if values:
            await self._write(write)

    async def crowded(
        self, since: float, more_than: int, touched: float | None = None
    ) -> list[str]:
        sql = (
            "SELECT client FROM multiplication_sightings WHERE seen_at >= ? AND tenant_id <> ? "
            "AND client IN (SELECT client FROM multiplication_sightings WHERE seen_at >= ?) "
            "GROUP BY client HAVING COUNT(DISTINCT tenant_id) > ? ORDER BY client"
        )
        args = (since, LINK, since if touched is None else touched, more_than)
        rows = await self._read(lambda db: db.execute(sql, args).fetchall())
        return [str(r[0]) for r in rows]

    async def sightings(self, client: str, since: float) -> list[Sighting]:
        sql = (
            "SELECT client, tenant_id, key_id, seen_at FROM multiplication_sightings "
            "WHERE client = ? AND seen_at >= ? AND tenant_id <> ? "
            "ORDER BY seen_at, tenant_id, key_id"
        )
        rows = await self._read(lambda db: db.execute(sql, (client, since, LINK)).fetchall())
        return [Sighting(*r) for r in rows]

    async def linked(self, client: str, since: float) -> list[str]:
        sql = (
            "SELECT key_id FROM multiplication_sightings WHERE client = ? AND tenant_id = ? "
            "AND seen_at >= ? ORDER BY key_id"
        )
        rows = await self._read(lambda db: db.execute(sql, (client, LINK, since)).fetchall())
        return [str(r[0]) for r in rows]

    async def claim(self, client: str, at: float, since: float) -> bool:
        return await self.claim_all([client], at, since)

    async def claim_all(
        self, clients: Sequence[str], at: float, since: float, linked: Sequence[str] = ()
    ) -> bool:
        must = set(clients)

        def write(db: sqlite3.Connection) -> bool:  # one write transaction: atomic
            for client in sorted(must.union(linked)):
                taken = db.execute(_CLAIM, (client, at, since)).rowcount != 1
                if taken and client in must:
                    raise Taken  # rolls back the group's claims made so far
            return True

        try:
            return bool(await self._write(write))
        except Taken:
            return False

    async def prune(self, before: float) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM multiplication_sightings WHERE seen_at < ?", (before,))
            db.execute("DELETE FROM multiplication_claims WHERE claimed_at < ?", (before,))

        await self._write(write)
