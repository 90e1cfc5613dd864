"""Admin endpoints of anomaly detection: incidents, and resolving one by hand."""

from __future__ import annotations

from typing import Any, Literal

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin.params import TenantFilter
from farebox.core.anomaly import Incident
from farebox.errors import NotFound
from farebox.notify.formats import details, summary
from farebox.stores.base import HasTraffic


def incident_json(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "status": "open" if incident.resolved_at is None else "resolved",
        "summary": summary(incident),
        "dedup_key": incident.dedup_key,
        "resolved_at": incident.resolved_at,
        **details(incident),
    }


class AnomalyRoutes:
    """The handlers of ``/anomalies`` and ``/anomalies/{incident_id}/resolve``."""

    def __init__(self, watch: AnomalyWatch, store: HasTraffic) -> None:
        self.watch = watch
        self.store = store

    async def anomalies(
        self, tenant: TenantFilter = None, status: Literal["open", "resolved"] | None = None
    ) -> dict[str, Any]:
        found = await self.store.traffic.incidents(tenant, open_only=status == "open")
        if status == "resolved":
            found = [i for i in found if i.resolved_at is not None]
        return {"object": "list", "data": [incident_json(i) for i in found]}

    async def resolve(self, incident_id: str) -> dict[str, Any]:
        found = [i for i in await self.store.traffic.incidents() if i.id == incident_id]
        if not found:
            raise NotFound(f"Incident {incident_id!r} not found.", code="incident_not_found")
        resolved = await self.watch.resolve(found[0])
        return incident_json(resolved[0] if resolved else found[0])  # or it already was
