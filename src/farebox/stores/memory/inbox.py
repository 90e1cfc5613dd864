"""The billing webhooks' inbox in process (the ``InboxStore`` role)."""

from __future__ import annotations

import dataclasses

from farebox.core.inbound import ParkedGrant


class MemoryInbox:
    def __init__(self) -> None:
        self._marks: dict[tuple[str, str, str], float] = {}
        self._parked: dict[str, ParkedGrant] = {}

    async def mark(self, sink: str, kind: str, ref: str, at: float) -> bool:
        if (sink, kind, ref) in self._marks:
            return False
        self._marks[(sink, kind, ref)] = at
        return True

    async def marked(self, sink: str, kind: str, ref: str) -> bool:
        return (sink, kind, ref) in self._marks

    async def park(self, parked: ParkedGrant) -> ParkedGrant:
        for found in self._parked.values():
            if (found.grant.sink, found.grant.event_id) == (
                parked.grant.sink,
                parked.grant.event_id,
            ):
                return found
        self._parked[parked.id] = parked
        return parked

    async def parked(self, status: str | None = None) -> list[ParkedGrant]:
        found = [p for p in self._parked.values() if status is None or p.status == status]
        return sorted(found, key=lambda p: (p.parked_at, p.id))

    async def get_parked(self, parked_id: str) -> ParkedGrant | None:
        return self._parked.get(parked_id)

    async def settle_parked(self, parked_id: str, tenant_id: str, at: float) -> bool:
        found = self._parked.get(parked_id)
        if found is None or found.status != "parked":
            return False
        self._parked[parked_id] = dataclasses.replace(
            found, status="applied", tenant_id=tenant_id, applied_at=at
        )
        return True
