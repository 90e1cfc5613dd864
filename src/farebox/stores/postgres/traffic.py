"""Traffic counters and anomaly incidents in PostgreSQL (the ``TrafficStore`` role)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from farebox.core.anomaly import HOUR, MINUTE, Incident, TrafficRow
from farebox.stores.traffic_rows import INCIDENT_COLS, incident_from, incident_values, increments


def _incident(row: Any) -> Incident:
    return incident_from(list(row))  # the pool's JSONB codec decodes ``detail``


class PostgresTraffic:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        s = schema
        self._upsert = (
            f"INSERT INTO {s}.traffic(res, start, tenant_id, key_id, requests, spend) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (res, start, tenant_id, key_id) "
            "DO UPDATE SET requests = traffic.requests + EXCLUDED.requests, "
            "spend = traffic.spend + EXCLUDED.spend"
        )
        self._select = f"SELECT tenant_id, key_id, start, requests, spend FROM {s}.traffic "
        self._s = s
        cols = ",".join(INCIDENT_COLS)
        self._cols = cols
        self._insert = (
            f"INSERT INTO {s}.anomaly_incidents({cols}) "
            f"VALUES ({','.join(f'${i}' for i in range(1, len(INCIDENT_COLS) + 1))})"
        )

    async def add(self, rows: Sequence[TrafficRow]) -> None:
        values = sorted(increments(rows))  # concurrent writers take row locks in one order
        if values:
            async with self._pool().acquire() as conn, conn.transaction():
                await conn.executemany(self._upsert, values)

    async def since(self, start: int) -> list[TrafficRow]:
        sql = self._select + "WHERE res = $1 AND start >= $2"
        return [TrafficRow(*r) for r in await self._pool().fetch(sql, MINUTE, start)]

    async def totals_since(self, start: int) -> list[TrafficRow]:
        sql = (
            f"SELECT tenant_id, key_id, SUM(requests)::BIGINT, SUM(spend)::BIGINT "
            f"FROM {self._s}.traffic WHERE res = $1 AND start >= $2 "
            "GROUP BY tenant_id, key_id ORDER BY tenant_id, key_id"
        )
        rows = await self._pool().fetch(sql, MINUTE, start)
        return [TrafficRow(t, k, start, int(r), int(s)) for t, k, r, s in rows]

    async def history(self, tenant_id: str, start: int) -> list[TrafficRow]:
        sql = self._select + "WHERE res = $1 AND tenant_id = $2 AND start >= $3 ORDER BY start"
        return [TrafficRow(*r) for r in await self._pool().fetch(sql, HOUR, tenant_id, start)]

    async def prune(self, minutes_before: int, hours_before: int) -> None:
        sql = f"DELETE FROM {self._s}.traffic WHERE res = $1 AND start < $2"
        await self._pool().executemany(sql, [(MINUTE, minutes_before), (HOUR, hours_before)])

    async def open_incident(self, incident: Incident, since: float) -> bool:
        values = incident_values(incident)
        async with self._pool().acquire() as conn, conn.transaction():
            # one claimant per tenant at a time, across every replica
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))",
                f"farebox:anomaly:{incident.tenant_id}",
            )
            blocked = await conn.fetchval(
                f"SELECT 1 FROM {self._s}.anomaly_incidents WHERE tenant_id = $1 "
                "AND (resolved_at IS NULL OR opened_at >= $2) LIMIT 1",
                incident.tenant_id,
                since,
            )
            if blocked:
                return False
            await conn.execute(self._insert, *values)
            return True

    async def incidents(
        self, tenant_id: str | None = None, open_only: bool = False
    ) -> list[Incident]:
        where, params = ["TRUE"], []
        if tenant_id is not None:
            params.append(tenant_id)
            where.append(f"tenant_id = ${len(params)}")
        if open_only:
            where.append("resolved_at IS NULL")
        sql = (
            f"SELECT {self._cols} FROM {self._s}.anomaly_incidents "
            f"WHERE {' AND '.join(where)} ORDER BY opened_at, id"
        )
        return [_incident(r) for r in await self._pool().fetch(sql, *params)]

    async def resolve_incidents(self, ids: Sequence[str], at: float) -> list[Incident]:
        sql = (
            f"UPDATE {self._s}.anomaly_incidents SET resolved_at = $1 "
            f"WHERE id = ANY($2::text[]) AND resolved_at IS NULL RETURNING {self._cols}"
        )
        rows = await self._pool().fetch(sql, at, list(ids))
        return sorted((_incident(r) for r in rows), key=lambda i: (i.opened_at, i.id))
