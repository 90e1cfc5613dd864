"""Traffic counters and anomaly incidents: the shared row shapes and the in-memory store.

Every implementation (memory, SQLite, PostgreSQL) keeps two resolutions of per-key traffic:
minute rows for the detector's recent window and hour rows for its baseline history. Adding
rows increments both. ``open_incident`` is atomic: at most one incident per tenant is open or
inside its cooldown, however many processes detect the same anomaly at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from farebox.core.anomaly import HOUR, MINUTE, Incident, TrafficRow

INCIDENT_COLS = tuple(f.name for f in dataclasses.fields(Incident))
RESOLUTIONS = (MINUTE, HOUR)


def incident_values(incident: Incident) -> list[Any]:
    return [getattr(incident, c) for c in INCIDENT_COLS]


def incident_from(row: Any) -> Incident:
    values = dict(zip(INCIDENT_COLS, row, strict=True))
    return Incident(**values)


def increments(rows: Sequence[TrafficRow]) -> list[tuple[int, int, str, str, int, int]]:
    """``(res, start, tenant, key, requests, spend)`` for both resolutions, summed."""
    out: dict[tuple[int, int, str, str], list[int]] = {}
    for row in rows:
        for res in RESOLUTIONS:
            cell = out.setdefault((res, row.start // res * res, row.tenant_id, row.key_id), [0, 0])
            cell[0] += row.requests
            cell[1] += row.spend
    return [(*k, v[0], v[1]) for k, v in sorted(out.items())]


def blocks(incident: Incident, tenant_id: str, since: float) -> bool:
    """An earlier incident that keeps a new one for ``tenant_id`` from opening."""
    return incident.tenant_id == tenant_id and (
        incident.resolved_at is None or incident.opened_at >= since
    )


class MemoryTraffic:
    def __init__(self) -> None:
        self._rows: dict[tuple[int, int, str, str], list[int]] = {}
        self._incidents: dict[str, Incident] = {}

    async def add(self, rows: Sequence[TrafficRow]) -> None:
        for res, start, tenant, key, requests, spend in increments(rows):
            cell = self._rows.setdefault((res, start, tenant, key), [0, 0])
            cell[0] += requests
            cell[1] += spend

    def _select(self, res: int, start: int, tenant_id: str | None = None) -> list[TrafficRow]:
        return [
            TrafficRow(t, k, s, v[0], v[1])
            for (r, s, t, k), v in sorted(self._rows.items())
            if r == res and s >= start and (tenant_id is None or t == tenant_id)
        ]

    async def since(self, start: int) -> list[TrafficRow]:
        return self._select(MINUTE, start)

    async def history(self, tenant_id: str, start: int) -> list[TrafficRow]:
        return self._select(HOUR, start, tenant_id)

    async def prune(self, minutes_before: int, hours_before: int) -> None:
        limit = {MINUTE: minutes_before, HOUR: hours_before}
        for k in [k for k in self._rows if k[1] < limit[k[0]]]:
            del self._rows[k]

    async def open_incident(self, incident: Incident, since: float) -> bool:
        if any(blocks(i, incident.tenant_id, since) for i in self._incidents.values()):
            return False
        self._incidents[incident.id] = dataclasses.replace(incident)
        return True

    async def incidents(
        self, tenant_id: str | None = None, open_only: bool = False
    ) -> list[Incident]:
        return sorted(
            (
                dataclasses.replace(i)
                for i in self._incidents.values()
                if (tenant_id is None or i.tenant_id == tenant_id)
                and not (open_only and i.resolved_at is not None)
            ),
            key=lambda i: (i.opened_at, i.id),
        )

    async def resolve_incidents(self, ids: Sequence[str], at: float) -> list[Incident]:
        done = []
        for incident_id in ids:
            incident = self._incidents.get(incident_id)
            if incident is not None and incident.resolved_at is None:
                incident.resolved_at = at
                done.append(dataclasses.replace(incident))
        return done
