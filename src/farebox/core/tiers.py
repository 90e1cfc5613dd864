"""Tiered pricing: a month's graduated charge, exact, split per request so that it telescopes.

A tiered plan charges a monthly fee (kept elsewhere) that covers an ``included`` allowance of
the month's usage in one metric (tokens, served requests or USD of provider cost), then
graduated tiers: usage above the allowance up to a tier's ``up_to`` (the month's cumulative
usage, the allowance counted in) is charged at that tier's price, the rest at the next ones.

Exactness. A price is pico-USD per ``scale`` units of the metric (tokens: per million
tokens; requests: per request; usd: per USD, that is per 10^12 pico-USD of cost), so the
exact charge of ``x`` units is a rational number of pico-USD. ``charge(x)`` is its floor: an
integer function of the month's cumulative usage. A request that brings the month from
``before`` to ``before + used`` earns ``charge(before + used) - charge(before)`` (a tier
boundary crossed mid-request is split at the boundary), so the month's per-request revenue
sums to ``charge(total)`` exactly, whatever the order or the interleaving of its requests.
The stores read and advance the month's cumulative usage in the ledger entry's transaction
(``TieredEntry`` carries the schedule to them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Literal

from farebox.core.records import LedgerEntry

Metric = Literal["tokens", "requests", "usd"]
METRICS: tuple[Metric, ...] = ("tokens", "requests", "usd")
# how many units of the metric a tier's price is for
SCALE: dict[str, int] = {"tokens": 1_000_000, "requests": 1, "usd": 10**12}
CACHE_HIT = "cache_hit"


@dataclass(frozen=True, slots=True)
class Tier:
    """Usage up to ``up_to`` (the month's cumulative units; None: without end), charged at
    ``price`` pico-USD per ``scale`` units."""

    up_to: int | None
    price: int


@dataclass(frozen=True, slots=True)
class TierPart:
    """One line of a month's charge: ``units`` of usage in a tier (``tier`` -1: the
    allowance), and their ``amount`` in pico-USD."""

    tier: int
    start: int
    end: int | None
    price: int
    units: int
    amount: int


@dataclass(frozen=True, slots=True)
class TierSchedule:
    """A plan's ``pricing.tiered`` as integers: ``included`` units are free, then ``tiers``
    (``up_to`` strictly ascending, above ``included``; the last without end)."""

    metric: Metric
    included: int
    tiers: tuple[Tier, ...]

    @property
    def scale(self) -> int:
        return SCALE[self.metric]

    def _spans(self) -> list[tuple[int, int | None, int]]:
        """(start, end, price) of each tier; the allowance is not one."""
        out, start = [], self.included
        for tier in self.tiers:
            out.append((start, tier.up_to, tier.price))
            if tier.up_to is not None:
                start = max(start, tier.up_to)
        return out

    def _exact(self, x: int) -> int:
        """The charge of ``x`` units times ``scale`` (an integer: exact)."""
        total = 0
        for start, end, price in self._spans():
            top = x if end is None else min(x, end)
            if top > start:
                total += (top - start) * price
        return total

    def charge(self, x: int) -> int:
        """T(x): the graduated charge of a month's cumulative usage ``x``, pico-USD (floor)."""
        if x <= self.included:
            return 0
        return self._exact(x) // self.scale

    def revenue(self, before: int, used: int) -> int:
        """What a request using ``used`` units earns when the month had used ``before``."""
        return self.charge(before + used) - self.charge(before)

    def at_most(self, used: int) -> int:
        """An upper bound of ``revenue(before, used)`` for any ``before`` (the highest rate)."""
        top = max((t.price for t in self.tiers), default=0)
        return -(-used * top // self.scale)

    def parts(self, x: int) -> list[TierPart]:
        """The month's charge of ``x`` units as lines: the allowance used, then each tier
        reached. Amounts are differences of the floored cumulative charge, so they sum to
        ``charge(x)`` exactly."""
        used = min(x, self.included)
        out = [TierPart(-1, 0, self.included, 0, max(used, 0), 0)]
        done, exact = 0, 0
        for i, (start, end, price) in enumerate(self._spans()):
            top = x if end is None else min(x, end)
            units = max(top - start, 0)
            exact += units * price
            amount = exact // self.scale - done
            done += amount
            out.append(TierPart(i, start, end, price, units, amount))
        return out


def units_of(metric: str, status: str, tokens: int, cost: int) -> int:
    """An entry's usage in ``metric``: its tokens (the whole prompt and the output), one if
    it was served (status ``ok``), or its provider cost. A cache hit uses none (it is priced
    by the plan's cache hit price)."""
    if status == CACHE_HIT:
        return 0
    if metric == "tokens":
        return tokens
    if metric == "requests":
        return int(status == "ok")
    return cost


def month_of(started_at: float) -> str:
    """The UTC month (``2026-11``) an entry counts in: that of its ``started_at``, as the
    rollups place it."""
    return datetime.fromtimestamp(int(started_at / 3600.0) * 3600, UTC).strftime("%Y-%m")


@dataclass(slots=True)
class TieredEntry(LedgerEntry):
    """A ledger entry of a tiered plan: its ``revenue`` is set by the store that writes it,
    from the month's cumulative usage read and advanced in the same transaction."""

    tier_schedule: TierSchedule | None = None

    def tier_units(self) -> int:
        assert self.tier_schedule is not None
        return units_of(self.tier_schedule.metric, self.status, self.tokens, self.cost)


_FIELDS = tuple(f.name for f in fields(LedgerEntry))


def with_schedule(entry: LedgerEntry, schedule: TierSchedule) -> TieredEntry:
    """``entry`` carrying ``schedule``, for the store that writes it."""
    return TieredEntry(**{name: getattr(entry, name) for name in _FIELDS}, tier_schedule=schedule)


def tiered(entries: Sequence[LedgerEntry]) -> list[TieredEntry]:
    """The entries that carry a tier schedule."""
    return [e for e in entries if isinstance(e, TieredEntry) and e.tier_schedule is not None]


def allot(entries: list[TieredEntry], before: int) -> int:
    """Set the revenue of ``entries`` (one tenant and month, in write order) from the
    month's usage ``before`` them; the usage after them."""
    for e in entries:
        assert e.tier_schedule is not None
        used = e.tier_units()
        e.revenue = e.tier_schedule.revenue(before, used)
        before += used
    return before


def groups(entries: list[TieredEntry]) -> dict[tuple[str, str], list[TieredEntry]]:
    """The entries by (tenant, month), sorted by key (a fixed lock order), each in order."""
    out: dict[tuple[str, str], list[TieredEntry]] = {}
    for e in entries:
        out.setdefault((e.tenant_id, month_of(e.started_at)), []).append(e)
    return dict(sorted(out.items()))
