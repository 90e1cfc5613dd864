"""Account multiplication's sightings and claims in process memory."""

from __future__ import annotations

from collections.abc import Sequence

from farebox.stores.multiplication import LINK, Sighting


class MemorySightings:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], float] = {}
        self._claims: dict[str, float] = {}

    async def add(self, rows: Sequence[Sighting]) -> None:
        for r in rows:
            slot = (r.client, r.tenant_id, r.key_id)
            self._seen[slot] = max(self._seen.get(slot, r.seen_at), r.seen_at)

    async def crowded(
        self, since: float, more_than: int, touched: float | None = None
    ) -> list[str]:
        tenants: dict[str, set[str]] = {}
        active: set[str] = set()
        for (client, tenant, _key), at in self._seen.items():
            if tenant == LINK:
                continue
            if at >= since:
                tenants.setdefault(client, set()).add(tenant)
            if touched is None or at >= touched:
                active.add(client)
        return sorted(c for c, t in tenants.items() if len(t) > more_than and c in active)

    async def sightings(self, client: str, since: float) -> list[Sighting]:
        rows = [Sighting(c, t, k, at) for (c, t, k), at in self._seen.items()
                if c == client and at >= since and t != LINK]  # fmt: skip
        return sorted(rows, key=lambda r: (r.seen_at, r.tenant_id, r.key_id))

    async def linked(self, client: str, since: float) -> list[str]:
        return sorted(k for (c, t, k), at in self._seen.items()
                      if c == client and t == LINK and at >= since)  # fmt: skip

    async def claim(self, client: str, at: float, since: float) -> bool:
        return await self.claim_all([client], at, since)

    async def claim_all(
        self, clients: Sequence[str], at: float, since: float, linked: Sequence[str] = ()
    ) -> bool:
        if any(self._claims.get(c, since - 1) >= since for c in clients):
            return False
        for c in set(clients):
            self._claims[c] = at
        for c in set(linked):  # only those free
            if self._claims.get(c, since - 1) < since:
                self._claims[c] = at
        return True

    async def prune(self, before: float) -> None:
        self._seen = {k: at for k, at in self._seen.items() if at >= before}
        self._claims = {k: at for k, at in self._claims.items() if at >= before}
