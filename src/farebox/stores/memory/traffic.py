"""Traffic counters and anomaly incidents in process memory (the ``TrafficStore`` role)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

from farebox.core.anomaly import MINUTE, Incident, TrafficRow
from farebox.stores.traffic_rows import increments


def _copy(incident: Incident) -> Incident:
    """A copy sharing nothing mutable with the original (as a database row would)."""
    return dataclasses.replace(incident, detail=copy.deepcopy(incident.detail))


def blocks(incident: Incident, tenant_id: str, since: float) -> bool:
    """An earlier incident that keeps a new one for ``tenant_id`` from opening."""
    return incident.tenant_id == tenant_id and (
        incident.resolved_at is None or incident.opened_at >= since
    )


class MemoryTraffic:
    def __init__(self) -> None:
        # minute rows by minute, hour rows by tenant: both reads touch only what they return
        self._minutes: dict[int, dict[tuple[str, str], list[int]]] = {}
        self._hours: dict[str, dict[tuple[int, str], list[int]]] = {}
        self._incidents: dict[str, Incident] = {}

    async def add(self, rows: Sequence[TrafficRow]) -> None:
        for res, start, tenant, key, requests, spend in increments(rows):
            if res == MINUTE:
                cell = self._minutes.setdefault(start, {}).setdefault((tenant, key), [0, 0])
            else:
                cell = self._hours.setdefault(tenant, {}).setdefault((start, key), [0, 0])
            cell[0] += requests
            cell[1] += spend

    async def since(self, start: int) -> list[TrafficRow]:
        return [
            TrafficRow(t, k, minute, v[0], v[1])
            for minute in sorted(m for m in self._minutes if m >= start)
            for (t, k), v in self._minutes[minute].items()
        ]

    async def totals_since(self, start: int) -> list[TrafficRow]:
        acc: dict[tuple[str, str], list[int]] = {}
        for minute in [m for m in self._minutes if m >= start]:
            for subject, (requests, spend) in self._minutes[minute].items():
                cell = acc.setdefault(subject, [0, 0])
                cell[0] += requests
                cell[1] += spend
        return [TrafficRow(t, k, start, v[0], v[1]) for (t, k), v in sorted(acc.items())]

    async def history(self, tenant_id: str, start: int) -> list[TrafficRow]:
        cells = self._hours.get(tenant_id, {})
        wanted = sorted(c for c in cells if c[0] >= start)
        return [TrafficRow(tenant_id, k, s, *cells[(s, k)]) for s, k in wanted]

    async def prune(self, minutes_before: int, hours_before: int) -> None:
        for minute in [m for m in self._minutes if m < minutes_before]:
            del self._minutes[minute]
        for cells in self._hours.values():
            for cell in [c for c in cells if c[0] < hours_before]:
                del cells[cell]

    async def open_incident(self, incident: Incident, since: float) -> bool:
        if any(blocks(i, incident.tenant_id, since) for i in self._incidents.values()):
            return False
        self._incidents[incident.id] = _copy(incident)
        return True

    async def incidents(
        self, tenant_id: str | None = None, open_only: bool = False
    ) -> list[Incident]:
        return sorted(
            (
                _copy(i)
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
                done.append(_copy(incident))
        return done
