"""Traffic counters and anomaly incidents in SQLite (the ``TrafficStore`` role)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from farebox.core.anomaly import HOUR, MINUTE, Incident, TrafficRow
from farebox.stores.sqlite.conn import Runner
from farebox.stores.traffic_rows import INCIDENT_COLS, incident_from, incident_values, increments

_DETAIL = INCIDENT_COLS.index("detail")
_UPSERT = (
    "INSERT INTO traffic(res, start, tenant_id, key_id, requests, spend) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(res, start, tenant_id, key_id) DO UPDATE SET "
    "requests = requests + excluded.requests, spend = spend + excluded.spend"
)
_SELECT = "SELECT tenant_id, key_id, start, requests, spend FROM traffic WHERE res = ? "


def _incident(row: Sequence[Any]) -> Incident:
    values = list(row)
    values[_DETAIL] = orjson.loads(values[_DETAIL])
    return incident_from(values)


class SQLiteTraffic:
    def __init__(self, write: Runner[Any], read: Runner[Any]) -> None:
        self._write = write  # runs a function in a write transaction
        self._read = read  # runs a function on the store's connection

    async def add(self, rows: Sequence[TrafficRow]) -> None:
        values = increments(rows)

        def write(db: sqlite3.Connection) -> None:  # no cursor may leave the store's thread
            db.executemany(_UPSERT, values)

        if values:
            await self._write(write)

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[TrafficRow]:
        found = await self._read(lambda db: db.execute(sql, params).fetchall())
        return [TrafficRow(*r) for r in found]

    async def since(self, start: int) -> list[TrafficRow]:
        return await self._rows(_SELECT + "AND start >= ?", (MINUTE, start))

    async def totals_since(self, start: int) -> list[TrafficRow]:
        sql = (
            "SELECT tenant_id, key_id, ?, SUM(requests), SUM(spend) FROM traffic "
            "WHERE res = ? AND start >= ? GROUP BY tenant_id, key_id ORDER BY tenant_id, key_id"
        )
        return await self._rows(sql, (start, MINUTE, start))

    async def history(self, tenant_id: str, start: int) -> list[TrafficRow]:
        sql = _SELECT + "AND tenant_id = ? AND start >= ? ORDER BY start"
        return await self._rows(sql, (HOUR, tenant_id, start))

    async def prune(self, minutes_before: int, hours_before: int) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM traffic WHERE res = ? AND start < ?", (MINUTE, minutes_before))
            db.execute("DELETE FROM traffic WHERE res = ? AND start < ?", (HOUR, hours_before))

        await self._write(write)

    async def open_incident(self, incident: Incident, since: float) -> bool:
        values = incident_values(incident)
        values[_DETAIL] = orjson.dumps(values[_DETAIL]).decode()
        insert = (
            f"INSERT INTO anomaly_incidents({','.join(INCIDENT_COLS)}) "
            f"VALUES ({','.join('?' * len(INCIDENT_COLS))})"
        )

        def write(db: sqlite3.Connection) -> bool:  # one write transaction: atomic
            blocked = db.execute(
                "SELECT 1 FROM anomaly_incidents WHERE tenant_id = ? "
                "AND (resolved_at IS NULL OR opened_at >= ?) LIMIT 1",
                (incident.tenant_id, since),
            ).fetchone()
            if blocked:
                return False
            db.execute(insert, values)
            return True

        return bool(await self._write(write))

    async def incidents(
        self, tenant_id: str | None = None, open_only: bool = False
    ) -> list[Incident]:
        where, params = ["1=1"], []
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if open_only:
            where.append("resolved_at IS NULL")
        sql = (
            f"SELECT {','.join(INCIDENT_COLS)} FROM anomaly_incidents "
            f"WHERE {' AND '.join(where)} ORDER BY opened_at, id"
        )
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
        return [_incident(r) for r in rows]

    async def resolve_incidents(self, ids: Sequence[str], at: float) -> list[Incident]:
        sql = (
            "UPDATE anomaly_incidents SET resolved_at = ? WHERE id = ? AND resolved_at IS NULL "
            f"RETURNING {','.join(INCIDENT_COLS)}"
        )

        def write(db: sqlite3.Connection) -> list[Incident]:
            return [_incident(r) for i in ids for r in db.execute(sql, (at, i)).fetchall()]

        result: list[Incident] = await self._write(write)
        return result
