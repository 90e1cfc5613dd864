"""Row shapes shared by every ``TrafficStore`` (memory, SQLite, PostgreSQL).

Each keeps two resolutions of per-key traffic: minute rows for the detector's recent window
and hour rows for its baseline history. ``increments`` turns traffic rows into the cells of
both; an incident is stored as the values of its fields, in ``INCIDENT_COLS`` order.
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
    """``(res, start, tenant, key, requests, spend)`` for both resolutions, summed (in no
    particular order)."""
    out: dict[tuple[int, int, str, str], list[int]] = {}
    for row in rows:
        for res in RESOLUTIONS:
            cell = out.setdefault((res, row.start // res * res, row.tenant_id, row.key_id), [0, 0])
            cell[0] += row.requests
            cell[1] += row.spend
    return [(*k, v[0], v[1]) for k, v in out.items()]
