"""Prepaid credits: the balance a request burns, its grants, expiries and alerts.

The balance is one counter of the ``ReservationStore`` per tenant (``credits:{tenant}``,
unit ``revenue``, one bucket for the tenant's lifetime). Its limit is what the grants make
available (``core.credits.available``), kept in the ``CreditStore`` and cached here per
tenant until the auth epoch moves (every grant and expiry bumps it, so every worker and
replica sees a new grant on its next request). A request holds its worst-case revenue
against the counter with its budgets, in the same atomic reservation, and settles to its
exact revenue in its ledger entry's transaction: the balance cannot go below zero under any
concurrency, as no budget can be overspent.

Grants that expire are closed lazily: the first request (or read) after an expiry records
it (``core.credits.forfeit``), at the cumulative burn counting what is held in flight.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from farebox.core.budgets import Hold, HoldState
from farebox.core.credits import (
    CREDIT_PREFIX,
    CreditGrant,
    CreditRate,
    allocate,
    available,
    forfeit,
    next_expiry,
)
from farebox.stores.base import CreditStore, ReservationStore

log = logging.getLogger("farebox.credits")
FOREVER = 253402300799.0  # 9999-12-31T23:59:59Z: a balance never resets


def credit_hold(tenant_id: str, limit: int) -> Hold:
    """The tenant's balance counter, limited to what its grants make available."""
    return Hold(
        key=f"{CREDIT_PREFIX}{tenant_id}",
        scope="credits",
        period="lifetime",
        name=None,
        limit=limit,
        bucket=0.0,
        buckets_from=0.0,
        resets_at=FOREVER,
        base_limit=limit,
        unit="revenue",
        tenant=tenant_id,
    )


@dataclass(frozen=True, slots=True)
class Balance:
    """A tenant's credits now, in pico-USD of revenue."""

    granted: int
    forfeited: int
    burned: int
    reserved: int
    grants: tuple[CreditGrant, ...]
    used: dict[str, int]  # what each grant absorbed

    @property
    def available(self) -> int:
        return self.granted - self.forfeited

    @property
    def balance(self) -> int:
        return max(self.available - self.burned - self.reserved, 0)

    def view(self, rate: CreditRate) -> dict[str, Any]:
        c = rate.credits
        return {
            "balance": c(self.balance),
            "reserved": c(self.reserved),
            "burned": c(self.burned),
            "granted": c(self.granted),
            "expired": c(self.forfeited),
            "grants": [_grant_view(g, self.used.get(g.id, 0), rate) for g in self.grants],
        }


def _grant_view(g: CreditGrant, used: int, rate: CreditRate) -> dict[str, Any]:
    left = 0 if g.closed_at_burn is not None else g.amount - used
    return {
        "id": g.id,
        "kind": g.kind,
        "amount": rate.credits(g.amount),
        "remaining": rate.credits(left),
        "burned": rate.credits(used),
        "expired": rate.credits(g.forfeited or 0),
        "expires_at": g.expires_at,
        "created_at": g.created_at,
        "source": g.source,
        "idempotency_key": g.key,
        "note": g.note,
    }


class CreditBook:
    """Grants, the balance counter's limit per tenant, expiries: made once, by ``app.py``."""

    def __init__(
        self,
        grants: CreditStore,
        counters: ReservationStore,
        epoch: Callable[[], Awaitable[int]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._grants = grants
        self._counters = counters
        self._epoch = epoch
        self._clock = clock
        self._cache: dict[str, tuple[int, list[CreditGrant]]] = {}

    # the request path ------------------------------------------------------------------
    async def holds(self, tenant_id: str) -> list[Hold]:
        """The balance counter a prepaid tenant's request reserves against."""
        grants = await self._current(tenant_id)
        return [credit_hold(tenant_id, available(grants))]

    async def _current(self, tenant_id: str) -> list[CreditGrant]:
        epoch = await self._epoch()
        cached = self._cache.get(tenant_id)
        if cached is None or cached[0] != epoch:
            cached = (epoch, await self._grants.credit_grants(tenant_id))
            if len(self._cache) > 10_000:  # a bound, not an LRU: refilled on demand
                self._cache.clear()
            self._cache[tenant_id] = cached
        grants = cached[1]
        due = next_expiry(grants)
        if due is not None and due <= self._clock():
            grants = await self._expire(tenant_id, grants)
        return grants

    async def _counter(self, tenant_id: str, grants: Sequence[CreditGrant]) -> HoldState:
        hold = credit_hold(tenant_id, available(grants))
        return (await self._counters.budget_states([hold]))[0]

    async def _expire(self, tenant_id: str, grants: list[CreditGrant]) -> list[CreditGrant]:
        """Record the expiries that are due: each closes at the burn so far, holds in flight
        included, so the limit never drops below what is spent or held."""
        state = await self._counter(tenant_id, grants)
        closed = forfeit(grants, self._clock(), state.used + state.reserved)
        if closed:
            await self._grants.close_grants(closed)
            self._cache.pop(tenant_id, None)
            grants = await self._grants.credit_grants(tenant_id)
            log.info("tenant %s: %d credit grants expired", tenant_id, len(closed))
        return grants

    # grants ------------------------------------------------------------------------------
    async def grant(
        self,
        tenant_id: str,
        amount: int,
        kind: str,
        key: str,
        expires_at: float | None,
        source: str,
        note: str | None = None,
    ) -> tuple[CreditGrant, bool]:
        """Grant ``amount`` pico-USD of credit, once per ``key`` (a repeat returns the first
        grant and False; ``Conflict`` when the key was used for another amount or kind)."""
        grants = await self._current(tenant_id)
        state = await self._counter(tenant_id, grants)
        made = CreditGrant(
            id=f"cg_{os.urandom(12).hex()}",
            tenant_id=tenant_id,
            key=key,
            kind=kind,
            amount=amount,
            created_at=self._clock(),
            expires_at=expires_at,
            source=source,
            opened_at_burn=state.used,
            note=note,
        )
        found, created = await self._grants.grant_credits(made)
        self._cache.pop(tenant_id, None)
        return found, created

    async def void(self, tenant_id: str, key: str, source: str) -> CreditGrant | None:
        """End the grant recorded under ``key`` now, forfeiting what it had left (a refund
        reversed, a billing system's voided grant). None: there is no such grant; a grant
        already ended is returned as it is."""
        grants = await self._current(tenant_id)
        target = next((g for g in grants if g.key == key), None)
        if target is None or target.closed_at_burn is not None:
            return target
        state = await self._counter(tenant_id, grants)
        burned = state.used + state.reserved
        used = allocate(grants, burned).get(target.id, 0)
        closed = replace(
            target,
            closed_at_burn=max(burned, target.opened_at_burn),
            forfeited=target.amount - used,
        )
        await self._grants.close_grants([closed])
        self._cache.pop(tenant_id, None)
        log.info("tenant %s: credit grant %s voided by %s", tenant_id, target.id, source)
        return closed

    async def balance(self, tenant_id: str) -> Balance:
        grants = await self._current(tenant_id)
        state = await self._counter(tenant_id, grants)
        return Balance(
            granted=sum(g.amount for g in grants),
            forfeited=sum(g.forfeited or 0 for g in grants),
            burned=state.used,
            reserved=state.reserved,
            grants=tuple(grants),
            used=allocate(grants, state.used),
        )
