"""Upsell moments and plan changes in process (the ``UpsellStore`` role)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from farebox.core.credits import CreditGrant
from farebox.core.upsell import Moment, PlanChange, TopUp


class MemoryUpsell:
    def __init__(self, grants: Callable[[], Iterable[CreditGrant]]) -> None:
        self._moments: dict[tuple[str, str, str, int], Moment] = {}
        self._changes: list[PlanChange] = []
        self._grants = grants  # every credit grant of the store (top-ups are read from them)

    async def add_moments(self, moments: Sequence[Moment]) -> None:
        for m in moments:
            self._moments.setdefault(m.key, m)

    async def moments(self, start: float, end: float) -> list[Moment]:
        found = [m for m in self._moments.values() if start <= m.hour < end]
        return sorted(found, key=lambda m: (m.hour, m.tenant_id, m.kind, m.budget))

    async def add_plan_change(self, change: PlanChange) -> None:
        self._changes.append(change)

    async def plan_changes(self, start: float, end: float) -> list[PlanChange]:
        found = [c for c in self._changes if start <= c.at < end]
        return sorted(found, key=lambda c: (c.at, c.tenant_id))

    async def top_ups(self, start: float, end: float) -> list[TopUp]:
        found = [
            TopUp(g.tenant_id, g.amount, g.created_at)
            for g in self._grants()
            if g.kind == "top_up" and start <= g.created_at < end
        ]
        return sorted(found, key=lambda t: (t.at, t.tenant_id))
