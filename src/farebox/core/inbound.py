"""Credit grants received from a billing system (``POST /billing/v1/webhooks/{sink}``), in
one neutral shape whatever system sent them, and those parked for review.

Each sink module of ``farebox.billing.webhooks`` reads its system's payload into an
``InboundGrant``: what to do (grant, void, or nothing), to which upstream grant (its id in the
billing system: the grant is applied once per upstream id, whatever deliveries carry it), for
which customer (the billing system's id, mapped to a tenant by ``Tenant.billing``), and how
much, exactly, in pico-USD of revenue. A grant that cannot be applied as it stands (an unknown
customer, another currency, an amount that is not exact) is parked: a ``ParkedGrant``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from farebox.core.credits import KINDS

ACTIONS = ("grant", "void", "ignore")
PICO_PER_USD = 10**12


@dataclass(frozen=True, slots=True)
class InboundGrant:
    """One delivery, read. ``event_id``: the delivery's event (applied once per event id);
    ``upstream_id``: the billing system's grant (applied once per upstream grant, and a void
    seen before its grant still voids it); ``amount``: pico-USD, None when the payload says
    none (a void); ``problem``: why it cannot be applied as it stands (it is parked)."""

    sink: str
    event_id: str
    event_type: str
    action: str  # grant | void | ignore
    upstream_id: str = ""
    customer: str = ""
    amount: int | None = None
    kind: str = "top_up"
    expires_at: float | None = None
    note: str | None = None
    problem: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action: {self.action!r} is not one of {ACTIONS}")
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r} is not one of {KINDS}")

    @property
    def key(self) -> str:
        """The credit grant's idempotency key: one grant per sink and upstream grant."""
        return f"{self.sink}:{self.upstream_id}"


@dataclass(frozen=True, slots=True)
class ParkedGrant:
    """An inbound grant held for review. ``status``: ``parked``, then ``applied`` (to
    ``tenant_id``, at ``applied_at``) once an admin applies it."""

    id: str
    grant: InboundGrant
    reason: str
    parked_at: float
    status: str = "parked"
    tenant_id: str | None = None
    applied_at: float | None = None


def exact_pico(units: str | int, unit_usd: str) -> int | None:
    """``units`` (a decimal) times ``unit_usd`` (USD per unit) in pico-USD, exactly; None
    when it is not a whole number of pico-USD, not a finite non-negative decimal, or zero."""
    try:
        value = Decimal(str(units).strip())
        rate = Decimal(unit_usd.strip())
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or not rate.is_finite() or value <= 0 or rate <= 0:
        return None
    if value.adjusted() > 30 or value.adjusted() < -30:
        return None  # far beyond any grant: refused before the arithmetic grows
    n1, d1 = value.as_integer_ratio()
    n2, d2 = rate.as_integer_ratio()
    pico, rest = divmod(n1 * n2 * PICO_PER_USD, d1 * d2)
    return pico if rest == 0 and pico > 0 else None
