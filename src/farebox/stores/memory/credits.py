"""Credit grants in process (the ``CreditStore`` role)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from farebox.core.credits import CreditGrant
from farebox.stores.credit_rows import expiry, same


class MemoryCredits:
    def __init__(self, bump: Callable[[], None]) -> None:
        self._grants: dict[str, list[CreditGrant]] = {}
        self._bump = bump  # the auth epoch: every worker sees the new limit

    async def grant_credits(self, grant: CreditGrant) -> tuple[CreditGrant, bool]:
        grants = self._grants.setdefault(grant.tenant_id, [])
        for found in grants:
            if found.key == grant.key:
                return same(found, grant), False
        grants.append(grant)
        self._bump()
        return grant, True

    def every_grant(self) -> list[CreditGrant]:
        return [g for held in self._grants.values() for g in held]

    async def credit_grants(self, tenant_id: str) -> list[CreditGrant]:
        return sorted(self._grants.get(tenant_id, []), key=lambda g: (g.created_at, g.id))

    async def update_grant(self, before: CreditGrant, after: CreditGrant) -> bool:
        held = self._grants.get(before.tenant_id, [])
        for i, found in enumerate(held):
            if found.id == before.id and expiry(found) == expiry(before):
                held[i] = dataclasses.replace(
                    found, closed_at_burn=after.closed_at_burn, forfeited=after.forfeited,
                    pending=after.pending,
                )  # fmt: skip
                self._bump()
                return True
        return False
