"""Prepaid credits: grants, their exact conversion to money, and which grant a burn draws on.

A tenant on a plan with ``pricing.credits`` holds a balance of credits. Internally every
amount is pico-USD of *revenue* (what the plan charges): a request burns exactly its ledger
revenue. ``CreditRate`` converts to and from the credits a person reads (``per_usd`` credits
to the dollar), exactly: one credit must be a whole number of pico-USD.

The balance is one budget counter per tenant (``credit_hold``). Its limit is everything ever
granted (``available``): it only grows, so a worker whose cached limit is stale only refuses
too early. Its spend is what was burned plus what expired grants forfeited; its holds are the
worst cases of requests in flight. The store's atomic reserve and settle keep it from going
below zero under any concurrency, as they do for budgets, and a forfeit is taken the same way
(reserved against the counter, then settled), never by lowering the limit.

Burns draw on the grant that expires first (then the oldest). Which burns a grant absorbed is
``allocate``'s answer, over the axis of cumulative burn: each grant takes burn from the
cumulative burn at its creation (``opened_at_burn``) until the point its expiry closed it
(``closed_at_burn``). An expiry (or a void) closes a grant in two steps (``closings``): at
once, it forfeits what even the holds in flight could not use (it stays open to them, up to
what they held); once they have settled, what they did not use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from farebox.core.money import PICO_PER_USD, MoneyFormatError, parse_usd

KINDS = ("top_up", "promo", "refund")
CREDIT_PREFIX = "credits:"  # the balance counter's key: ``credits:{tenant}``
_DECIMAL = re.compile(r"-?\d{1,30}(\.\d{1,30})?")  # a credits amount as written


@dataclass(frozen=True, slots=True)
class CreditRate:
    """``per_usd`` credits make one USD; ``unit`` pico-USD make one credit."""

    unit: int

    @classmethod
    def of(cls, per_usd: str | int, *, field: str = "credits.per_usd") -> CreditRate:
        """From a decimal ``per_usd``; one credit must be a whole number of pico-USD."""
        scaled = parse_usd(per_usd, field=field)  # per_usd * 10^12
        if scaled <= 0:
            raise MoneyFormatError(f"{field}: must be positive")
        unit, rest = divmod(PICO_PER_USD * PICO_PER_USD, scaled)
        if rest:
            raise MoneyFormatError(
                f"{field}: {per_usd!r} does not make one credit a whole number of pico-USD "
                "(use a divisor of 10^12, such as 1, 100 or 1000)"
            )
        return cls(unit)

    def to_pico(self, credits: str | int, *, field: str = "amount") -> int:
        """Credits as a decimal string -> pico-USD, exactly (``MoneyFormatError`` if not)."""
        text = str(credits).strip() if isinstance(credits, str | int) else ""
        if isinstance(credits, bool) or not _DECIMAL.fullmatch(text):
            raise MoneyFormatError(f'{field}: expected a decimal string such as "1500"')
        value = Fraction(text) * self.unit
        if value.denominator != 1:
            raise MoneyFormatError(f"{field}: {credits!r} has too many decimal places")
        return int(value)

    def credits(self, pico: int) -> str:
        """pico-USD -> credits as an exact decimal string."""
        return _exact(pico, self.unit)


@dataclass(frozen=True, slots=True)
class CreditTerms:
    """A prepaid plan's terms: its rate, the balances (pico-USD) below which a low-balance
    alert fires, and the automatic top-up it asks for (below, amount), if any."""

    rate: CreditRate
    low_balance: tuple[int, ...] = ()
    top_up: tuple[int, int] | None = None

    def crossed(self, before: int, after: int) -> list[int]:
        """The thresholds a balance falling from ``before`` to ``after`` went below."""
        marks = list(self.low_balance)
        if self.top_up is not None:
            marks.append(self.top_up[0])
        return sorted({m for m in marks if after < m <= before}, reverse=True)


def _exact(pico: int, unit: int) -> str:
    # ``unit`` divides 10^24 (``of``), so pico / unit terminates within 24 decimals
    scaled = pico * 10**24 // unit
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), 10**24)
    digits = f"{frac:024d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


@dataclass(frozen=True, slots=True)
class CreditGrant:
    """Credits granted to a tenant, in pico-USD of revenue.

    ``key``: the idempotency key (one grant per tenant and key). ``source``: ``admin``, or
    the billing system it came from (``stripe``, ``lago``...). ``opened_at_burn``: the
    tenant's cumulative burn when it was granted. ``closed_at_burn`` and ``forfeited``: set
    once its expiry is recorded (``pending`` until the holds in flight then have settled)."""

    id: str
    tenant_id: str
    key: str
    kind: str
    amount: int
    created_at: float
    expires_at: float | None = None
    source: str = "admin"
    opened_at_burn: int = 0
    closed_at_burn: int | None = None
    forfeited: int | None = None
    note: str | None = None
    pending: bool = False  # closed with holds in flight: its forfeit is not final yet

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def _order(grant: CreditGrant) -> tuple[float, float, str]:
    expiry = grant.expires_at if grant.expires_at is not None else math.inf
    return (expiry, grant.created_at, grant.id)


def allocate(grants: Sequence[CreditGrant], burned: int) -> dict[str, int]:
    """How much of ``burned`` (the tenant's cumulative burn) each grant absorbed.

    Walking the burn axis from 0 to ``burned``: at each point the grants open there
    (``opened_at_burn <= x < closed_at_burn``) and not used up take burn, the one that
    expires first before the others. Burn no grant could take is reported under ``""``
    (it cannot happen while the store keeps the balance, but the sum always adds up)."""
    used = {g.id: 0 for g in grants}
    marks = sorted(
        {0, burned}
        | {g.opened_at_burn for g in grants if g.opened_at_burn < burned}
        | {
            g.closed_at_burn
            for g in grants
            if g.closed_at_burn is not None and g.closed_at_burn < burned
        }
    )
    ordered = sorted(grants, key=_order)
    spill = 0
    for start, end in zip(marks, marks[1:], strict=False):
        left = end - start
        for g in ordered:
            if left == 0:
                break
            closed = g.closed_at_burn if g.closed_at_burn is not None else math.inf
            if g.opened_at_burn <= start and end <= closed:
                take = min(left, g.amount - used[g.id])
                used[g.id] += take
                left -= take
        spill += left
    if spill:
        used[""] = spill
    return used


def closings(
    grants: Sequence[CreditGrant],
    now: float,
    burned: int,
    reserved: int,
    due: frozenset[str] = frozenset(),
) -> list[tuple[CreditGrant, CreditGrant]]:
    """The grant records an expiry changes now, as ``(before, after)`` pairs, in order; what
    ``after`` forfeits beyond ``before`` is what to take from the balance.

    ``burned``: the tenant's cumulative burn (forfeits excluded); ``reserved``: what requests
    in flight hold; ``due``: grants ended now whatever their expiry (a void).

    1. A grant that expired (or is ``due``) and is still open closes at ``burned +
    reserved``: the holds in flight may still burn it, up to what they hold. It forfeits at
    once what it would not have absorbed even if they burned all they hold; ``pending``
    while any was held.
    2. A ``pending`` grant whose holds have settled (nothing is held, or the burn has passed
    its closing point) forfeits the rest of what it did not absorb, and is final."""
    current = list(grants)
    out: list[tuple[CreditGrant, CreditGrant]] = []
    for i, g in enumerate(current):
        if g.closed_at_burn is None and (g.expired(now) or g.id in due):
            point = max(burned + reserved, g.opened_at_burn)
            current[i] = replace(g, closed_at_burn=point, pending=reserved > 0)
            used = allocate(current, burned + reserved).get(g.id, 0)
            current[i] = replace(current[i], forfeited=g.amount - used)
            out.append((g, current[i]))
    for i, g in enumerate(current):
        ready = g.pending and g.closed_at_burn is not None
        if ready and (reserved == 0 or burned >= (g.closed_at_burn or 0)):
            used = allocate(current, burned).get(g.id, 0)
            before = next((b for b, a in out if a.id == g.id), g)
            current[i] = replace(g, forfeited=max(g.amount - used, g.forfeited or 0),
                                 pending=False)  # fmt: skip
            out = [(b, a) for b, a in out if a.id != g.id] + [(before, current[i])]
    return out


def available(grants: Sequence[CreditGrant]) -> int:
    """The balance counter's limit: everything granted (forfeits are spent, not removed)."""
    return sum(g.amount for g in grants)


def forfeited(grants: Sequence[CreditGrant]) -> int:
    """What expired and voided grants forfeited (taken from the balance as spend)."""
    return sum(g.forfeited or 0 for g in grants)


def next_expiry(grants: Sequence[CreditGrant]) -> float | None:
    """When ``closings`` next has work to do: the next open grant's expiry, or at once while
    a closed grant's forfeit is pending."""
    if any(g.pending for g in grants):
        return -math.inf
    return min(
        (g.expires_at for g in grants if g.expires_at is not None and g.closed_at_burn is None),
        default=None,
    )
