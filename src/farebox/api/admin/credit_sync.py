"""Admin endpoints of the billing webhooks: grants parked for review, and applying one."""

from __future__ import annotations

from typing import Any, Literal

from farebox.api.billing_webhooks import credit_sync
from farebox.api.context import Services
from farebox.core.inbound import ParkedGrant
from farebox.core.money import format_usd


def parked_json(p: ParkedGrant) -> dict[str, Any]:
    g = p.grant
    return {
        "id": p.id,
        "status": p.status,
        "reason": p.reason,
        "parked_at": p.parked_at,
        "tenant_id": p.tenant_id,
        "applied_at": p.applied_at,
        "sink": g.sink,
        "event_id": g.event_id,
        "event_type": g.event_type,
        "action": g.action,
        "upstream_id": g.upstream_id,
        "customer": g.customer,
        "amount": None if g.amount is None else format_usd(g.amount),
        "kind": g.kind,
        "expires_at": g.expires_at,
        "note": g.note,
    }


class CreditSyncRoutes:
    """The handlers of ``/credits/parked`` and ``/credits/parked/{parked_id}/apply``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def parked(self, status: Literal["parked", "applied"] | None = None) -> dict[str, Any]:
        found = await self.services.store.inbox.parked(status)
        return {"object": "list", "data": [parked_json(p) for p in found]}

    async def apply_parked(self, parked_id: str) -> dict[str, Any]:
        return parked_json(await credit_sync(self.services).apply_parked(parked_id))
