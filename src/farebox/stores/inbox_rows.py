"""The billing webhooks' inbox as rows (``InboxStore``): the columns every SQL store keeps for
a parked grant, and how a row reads back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from farebox.core.inbound import InboundGrant, ParkedGrant

GRANT_COLS = (
    "sink", "event_id", "event_type", "action", "upstream_id", "customer", "amount", "kind",
    "expires_at", "note", "problem",
)  # fmt: skip
PARK_COLS = ("id", "reason", "parked_at", "status", "tenant_id", "applied_at")
COLS = PARK_COLS + GRANT_COLS
STATUSES = ("parked", "applied")


def values(parked: ParkedGrant) -> list[Any]:
    """The row's values; ``amount`` as text (an exact integer whatever its size)."""
    g = parked.grant
    row = [getattr(parked, c) for c in PARK_COLS] + [getattr(g, c) for c in GRANT_COLS]
    amount = COLS.index("amount")
    row[amount] = None if row[amount] is None else str(row[amount])
    return row


def parked_of(row: Sequence[Any]) -> ParkedGrant:
    fields = dict(zip(COLS, row, strict=True))
    grant = {c: fields.pop(c) for c in GRANT_COLS}
    grant["amount"] = None if grant["amount"] is None else int(grant["amount"])
    return ParkedGrant(grant=InboundGrant(**grant), **fields)
