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

import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from farebox.core.budgets import Hold, HoldState
from farebox.core.credits import (
    CREDIT_PREFIX,
    CreditGrant,
    CreditRate,
    allocate,
    available,
    closings,
    forfeited,
    next_expiry,
)
from farebox.core.records import LEDGER_FREE, LedgerEntry, Reservation
from farebox.errors import InvalidRequest
from farebox.stores.base import CreditStore, ReservationStore

log = logging.getLogger("farebox.credits")
FOREVER = 253402300799.0  # 9999-12-31T23:59:59Z: a balance never resets
MAX_GRANT = 10**30  # pico-USD (USD 10^18): every store keeps it exactly (NUMERIC(38, 0))
PENDING_S = 1.0  # how often a tenant's pending forfeits are looked at again


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
        # never below 0 while the store keeps the counter (a forfeit is held, then spent)
        return self.available - self.burned - self.reserved

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


@dataclass(slots=True)
class Taken:
    """What a forfeit took from the balance, and whether it is to be spent (``keep``)."""

    amount: int = 0
    keep: bool = False


def _forfeit_entry(tenant_id: str, rid: str, amount: int, now: float) -> LedgerEntry:
    """The placeholder a forfeit's hold settles with: ``amount`` of revenue spent, nothing
    written to the ledger (``LEDGER_FREE``: an expiry is not a request)."""
    return LedgerEntry(
        request_id=f"forfeit_{rid}", tenant_id=tenant_id, key_id="", endpoint="credits",
        model_requested="", model_served="", provider="", status=LEDGER_FREE, http_status=0,
        started_at=now, finished_at=now, revenue=amount, reservation_id=rid,
    )  # fmt: skip


def _released(reservation: Reservation) -> Reservation:
    """The same hold, settled at nothing: released."""
    return replace(reservation, unsettled=replace(reservation.unsettled, revenue=0))


class CreditBook:
    """Grants, the balance counter's limit per tenant, expiries: made once, by ``app.py``."""

    def __init__(
        self,
        grants: CreditStore,
        counters: ReservationStore,
        epoch: Callable[[], Awaitable[int]],
        clock: Callable[[], float] = time.time,
        lease_s: float = 120.0,
    ) -> None:
        self._grants = grants
        self._lease_s = lease_s
        self._counters = counters
        self._epoch = epoch
        self._clock = clock
        self._cache: dict[str, tuple[int, list[CreditGrant]]] = {}
        self._looked: dict[str, float] = {}  # when a tenant's pending forfeits were looked at

    # the request path ------------------------------------------------------------------
    async def holds(self, tenant_id: str) -> list[Hold]:
        """The balance counter a prepaid tenant's request reserves against."""
        grants = await self._current(tenant_id)
        return [credit_hold(tenant_id, available(grants))]

    async def _current(self, tenant_id: str, look: bool = False) -> list[CreditGrant]:
        """The tenant's grants, with the expiries that are due recorded (``look``: pending
        forfeits looked at now, not at most once a second as the request path does)."""
        epoch = await self._epoch()
        cached = self._cache.get(tenant_id)
        if cached is None or cached[0] != epoch:
            cached = (epoch, await self._grants.credit_grants(tenant_id))
            if len(self._cache) > 10_000:  # a bound, not an LRU: refilled on demand
                self._cache.clear()
                self._looked.clear()
            self._cache[tenant_id] = cached
        grants, now = cached[1], self._clock()
        due = next_expiry(grants)
        if due is not None and due <= now:
            # a pending forfeit waits for holds to settle: looked at once a second, not per
            # request (an expiry that is due is recorded at once)
            waited = now - self._looked.get(tenant_id, -math.inf) >= PENDING_S
            if due > -math.inf or look or waited:
                self._looked[tenant_id] = now
                grants = await self._expire(tenant_id, grants)
        return grants

    async def _counter(self, tenant_id: str, grants: Sequence[CreditGrant]) -> HoldState:
        hold = credit_hold(tenant_id, available(grants))
        return (await self._counters.budget_states([hold]))[0]

    async def _expire(
        self, tenant_id: str, grants: list[CreditGrant], due: frozenset[str] = frozenset()
    ) -> list[CreditGrant]:
        """Record the expiries that are due (``core.credits.closings``), taking each forfeit
        from the balance as the store takes any spend: held against the counter in one
        atomic reserve (so it never takes what requests hold or what is spent), then, by the
        one caller whose record of the expiry won, settled; released by any other."""
        state = await self._counter(tenant_id, grants)
        burned = state.used - forfeited(grants)
        pairs = closings(grants, self._clock(), burned, state.reserved, due)
        for before, after in pairs:
            want = (after.forfeited or 0) - (before.forfeited or 0)
            async with self._forfeit(tenant_id, grants, want) as taken:
                after = replace(after, forfeited=(before.forfeited or 0) + taken.amount)
                taken.keep = await self._grants.update_grant(before, after)
            log.info("tenant %s: credit grant %s forfeits %d pico-USD (%s)", tenant_id,
                     before.id, taken.amount, "taken" if taken.keep else "not ours")  # fmt: skip
        if pairs:
            self._cache.pop(tenant_id, None)
            grants = await self._grants.credit_grants(tenant_id)
        return grants

    @contextlib.asynccontextmanager
    async def _forfeit(
        self, tenant_id: str, grants: Sequence[CreditGrant], want: int
    ) -> AsyncIterator[Taken]:
        """Hold up to ``want`` of the balance (what is free of spend and holds); on leaving,
        spend it if ``keep`` was set, else release it, whatever happened in the block."""
        taken = Taken()
        hold = credit_hold(tenant_id, available(grants))
        reservation = None
        for _ in range(3):  # the free room may shrink between the read and the reserve
            if want <= 0:
                break
            rid = f"rsv_forfeit_{os.urandom(8).hex()}"
            entry = _forfeit_entry(tenant_id, rid, want, self._clock())
            made = Reservation(rid, 0, (hold,), self._clock() + self._lease_s, entry, 0, want)
            outcome = await self._counters.reserve(made)
            if outcome.ok:
                reservation, taken.amount = made, want
                break
            want = min(want, outcome.states[0].remaining)
        try:
            yield taken
        finally:
            if reservation is not None:
                spent = reservation if taken.keep else _released(reservation)
                await self._counters.settle_counters(spent)

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
        grant and False; ``Conflict`` when the key was used for another amount or kind;
        ``InvalidRequest`` beyond ``MAX_GRANT``)."""
        if not 0 < amount <= MAX_GRANT:
            raise InvalidRequest(
                "'amount' must be positive and at most USD 10^18 of credit.", param="amount"
            )
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
            opened_at_burn=state.used - forfeited(grants),
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
        grants = await self._expire(tenant_id, grants, frozenset({target.id}))
        log.info("tenant %s: credit grant %s voided by %s", tenant_id, target.id, source)
        return next((g for g in grants if g.id == target.id), target)

    async def balance(self, tenant_id: str) -> Balance:
        grants = await self._current(tenant_id, look=True)
        state = await self._counter(tenant_id, grants)
        lost = forfeited(grants)
        return Balance(
            granted=available(grants),
            forfeited=lost,
            burned=state.used - lost,
            reserved=state.reserved,
            grants=tuple(grants),
            used=allocate(grants, state.used - lost),
        )
