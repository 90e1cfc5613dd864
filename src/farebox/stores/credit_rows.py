"""Credit grants as rows: the columns every SQL store keeps, and the rules every store applies
(``CreditStore``): one grant per tenant and idempotency key, an expiry recorded once."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from farebox.core.credits import CreditGrant
from farebox.errors import Conflict

COLS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CreditGrant))
INSERT = f"INSERT INTO credit_grants({','.join(COLS)}) VALUES ({','.join('?' * len(COLS))})"
SELECT = f"SELECT {','.join(COLS)} FROM credit_grants WHERE tenant_id = ? "
BY_KEY = SELECT + "AND key = ?"
BY_TENANT = SELECT + "ORDER BY created_at, id"
UPDATE = (
    "UPDATE credit_grants SET closed_at_burn = ?, forfeited = ?, pending = ? "
    "WHERE tenant_id = ? AND id = ? AND closed_at_burn IS ? AND forfeited IS ? AND pending = ?"
)


def values(grant: CreditGrant) -> list[Any]:
    # money columns hold exact integers: kept as TEXT where they may pass 2^63 (never in
    # practice, but a column never rounds)
    return [getattr(grant, c) for c in COLS]


def grant_of(row: Sequence[Any]) -> CreditGrant:
    fields = dict(zip(COLS, row, strict=True))
    for name in ("amount", "opened_at_burn"):
        fields[name] = int(fields[name])
    for name in ("closed_at_burn", "forfeited"):
        if fields[name] is not None:
            fields[name] = int(fields[name])
    fields["pending"] = bool(fields["pending"])
    return CreditGrant(**fields)


def expiry(grant: CreditGrant) -> tuple[str | None, str | None, bool]:
    """A grant's expiry record, money as exact decimal text."""
    closed, lost = grant.closed_at_burn, grant.forfeited
    return (None if closed is None else str(closed), None if lost is None else str(lost),
            grant.pending)  # fmt: skip


def same(found: CreditGrant, wanted: CreditGrant) -> CreditGrant:
    """The grant already recorded under ``wanted``'s key, if it asked for the same thing;
    ``Conflict`` if the key is reused for another amount or kind."""
    if found.amount != wanted.amount or found.kind != wanted.kind:
        raise Conflict(
            f"idempotency key {wanted.key!r} was used for another grant (kind {found.kind}, "
            "another amount); use a new key for a new grant"
        )
    return found


class CreditsThatBump:
    """A ``CreditStore`` whose every change is followed by ``bump`` (the scaled store's
    shared auth epoch, which lives beside its database)."""

    def __init__(self, inner: Any, bump: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._bump = bump

    async def grant_credits(self, grant: CreditGrant) -> tuple[CreditGrant, bool]:
        found, created = await self._inner.grant_credits(grant)
        if created:
            await self._bump()
        return found, created

    async def credit_grants(self, tenant_id: str) -> list[CreditGrant]:
        return list(await self._inner.credit_grants(tenant_id))

    async def update_grant(self, before: CreditGrant, after: CreditGrant) -> bool:
        won = bool(await self._inner.update_grant(before, after))
        if won:
            await self._bump()
        return won
