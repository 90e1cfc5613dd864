"""What a ledger entry is worth on each billing meter, exactly.

Counts are integers; money is an exact decimal string of USD (``format_usd`` of pico-USD), so
a billing engine sums to the ledger's total to the last unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry

Meter = Literal[
    "input_tokens", "output_tokens", "cost_usd", "revenue_usd", "requests", "cache_hits"
]
METERS: tuple[Meter, ...] = get_args(Meter)  # every meter a billing sink can be sent
MONEY_METERS = frozenset({"cost_usd", "revenue_usd"})
HOUR = 3600
BILLED = frozenset({"ok", "error", "upstream_interrupted", "client_disconnected", "cache_hit"})


def billable(entry: LedgerEntry) -> bool:
    """An ``unsettled`` placeholder is not usage yet: reconciliation shows it instead."""
    return entry.status in BILLED


def raw_value(entry: LedgerEntry, meter: str) -> int:
    """A meter's value as an integer: tokens, requests, or pico-USD for money meters."""
    if meter == "input_tokens":
        return entry.input_tokens
    if meter == "output_tokens":
        return entry.output_tokens
    if meter == "cost_usd":
        return entry.cost
    if meter == "revenue_usd":
        return entry.revenue
    if meter == "requests":
        return 1
    if meter == "cache_hits":
        return 1 if entry.status == "cache_hit" else 0
    raise ValueError(f"unknown meter {meter!r}")


def render(meter: str, raw: int) -> str:
    """The value as the wire carries it: an exact decimal string."""
    return format_usd(raw) if meter in MONEY_METERS else str(raw)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value to export: for one request (``unit`` = its request id) or one tenant-hour
    (``unit`` = ``h<unix hour start>``)."""

    tenant: str
    unit: str
    meter: str
    raw: int
    timestamp: int
    model: str | None = None


def per_request(entries: Iterable[LedgerEntry], meters: Sequence[str]) -> list[Reading]:
    out = []
    for e in entries:
        if not billable(e):
            continue
        for meter in meters:
            raw = raw_value(e, meter)
            if raw:
                out.append(Reading(e.tenant_id, e.request_id, meter, raw, int(e.finished_at),
                                   e.model_served))  # fmt: skip
    return out


def hour_of(ts: float) -> int:
    return int(ts // HOUR) * HOUR


def per_hour(entries: Iterable[LedgerEntry], meters: Sequence[str]) -> list[Reading]:
    """Sums per tenant, hour (of ``finished_at``) and meter."""
    sums: dict[tuple[str, int, str], int] = {}
    for e in entries:
        if not billable(e):
            continue
        hour = hour_of(e.finished_at)
        for meter in meters:
            raw = raw_value(e, meter)
            if raw:
                slot = (e.tenant_id, hour, meter)
                sums[slot] = sums.get(slot, 0) + raw
    return [Reading(t, f"h{h}", m, raw, h) for (t, h, m), raw in sorted(sums.items())]
