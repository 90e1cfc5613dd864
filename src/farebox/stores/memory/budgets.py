"""Budget counters and leased reservations in process memory (same semantics as SQLite).

Counters are kept per counter key, bucket by bucket, so a reservation touches only its own
counters. ``load`` (optional) supplies a counter's stored buckets the first time it is used:
the single-process SQLite store keeps its counters here and loads them from the database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from farebox.core.budgets import MONEY_UNITS, Hold, HoldState, rollover, settled_amount
from farebox.core.records import LedgerEntry, Reservation, ReserveOutcome

Buckets = dict[float, list[int]]  # bucket -> [used, reserved]


@dataclasses.dataclass(slots=True)
class _Held:
    reservation: Reservation
    expires_at: float
    state: str = "held"


class MemoryBudgets:
    def __init__(self, load: Callable[[str], Buckets] | None = None) -> None:
        self._counters: dict[str, Buckets] = {}
        self._load = load
        self._holds: dict[str, _Held] = {}
        self._alerts: dict[tuple[str, float, int], dict[str, Any]] = {}

    def _buckets(self, key: str) -> Buckets:
        found = self._counters.get(key)
        if found is None:
            found = self._counters[key] = self._load(key) if self._load is not None else {}
        return found

    def state(self, hold: Hold) -> HoldState:
        return HoldState(hold, *self._sums(hold))

    def _sums(self, hold: Hold) -> tuple[int, int, int, float | None]:
        """``used``, ``reserved``, ``limit`` (with rollover) and the oldest live bucket."""
        buckets = self._buckets(hold.key)
        limit = hold.limit
        if hold.rollover_bucket is not None:
            before = buckets.get(hold.rollover_bucket)
            limit += rollover(hold, before[0] if before else 0)
        low, high = hold.buckets_from, hold.bucket
        if low == high:  # a calendar window or a lifetime: one bucket
            slot = buckets.get(high)
            if slot is None:
                return 0, 0, limit, None
            used, reserved = slot
            return used, reserved, limit, high if used or reserved else None
        used = reserved = 0
        oldest: float | None = None
        stale = []
        for bucket, (u, r) in buckets.items():
            if hold.counts(bucket):
                used += u
                reserved += r
                if (u or r) and (oldest is None or bucket < oldest):
                    oldest = bucket
            elif bucket < low and hold.unit not in MONEY_UNITS and not r:
                stale.append(bucket)  # a rate-limit bucket that left its window
        for bucket in stale:
            del buckets[bucket]
        return used, reserved, limit, oldest

    def reserve(self, reservation: Reservation) -> ReserveOutcome:
        found: list[tuple[Hold, int, int, int, float | None, int]] = []
        for hold in reservation.holds:
            used, reserved, limit, oldest = self._sums(hold)
            amount = reservation.held(hold)
            if used + reserved + amount > limit:
                states = [self.state(h) for h in reservation.holds]
                return ReserveOutcome(False, states, states[len(found)])
            found.append((hold, used, reserved, limit, oldest, amount))
        after = []
        for hold, used, reserved, limit, oldest, amount in found:
            self._slot(hold.key, hold.bucket)[1] += amount
            after.append(HoldState(hold, used, reserved + amount, limit, oldest))
        self._holds[reservation.id] = _Held(reservation, reservation.expires_at)
        return ReserveOutcome(True, after)

    def _slot(self, key: str, bucket: float) -> list[int]:
        buckets = self._buckets(key)
        slot = buckets.get(bucket)
        if slot is None:
            slot = buckets[bucket] = [0, 0]
        return slot

    def settling(self, reservation_id: str | None) -> tuple[Reservation, bool] | None:
        """A reservation settlement would still count, and whether its lease was reclaimed."""
        held = self._holds.get(reservation_id or "")
        if held is None or held.state == "settled_late":
            return None
        return held.reservation, held.state == "reclaimed"

    def cancel(self, reservation_id: str) -> None:
        """Undo a reservation that never took effect (nothing was forwarded)."""
        held = self._holds.pop(reservation_id, None)
        if held is not None and held.state == "held":
            for hold in held.reservation.holds:
                self._slot(hold.key, hold.bucket)[1] -= held.reservation.held(hold)

    def settle(
        self, entries: Sequence[LedgerEntry], ledger: MutableMapping[str, LedgerEntry]
    ) -> None:
        for entry in entries:
            held = self._holds.get(entry.reservation_id or "")
            if held is None or held.state == "settled_late":
                continue
            live = held.state == "held"  # a reclaimed hold was already released
            for hold in held.reservation.holds:
                slot = self._slot(hold.key, hold.bucket)
                slot[1] -= held.reservation.held(hold) if live else 0
                slot[0] += settled_amount(hold.unit, entry.cost, entry.tokens, entry.revenue)
            if live:
                del self._holds[held.reservation.id]
            else:
                held.state = "settled_late"
                if ledger.get(entry.request_id, entry).status == "unsettled":
                    del ledger[entry.request_id]

    def extend(self, ids: Sequence[str], expires_at: float) -> None:
        for rid in ids:
            held = self._holds.get(rid)
            if held is not None and held.state == "held":
                held.expires_at = expires_at

    def expired(self, now: float) -> list[LedgerEntry]:
        """Release the holds whose lease ran out; the placeholders that go to the ledger (a
        ledger-free reservation's does not)."""
        entries = []
        for held in self._holds.values():
            if held.state != "held" or held.expires_at >= now:
                continue
            for hold in held.reservation.holds:
                self._slot(hold.key, hold.bucket)[1] -= held.reservation.held(hold)
            held.state = "reclaimed"
            if not held.reservation.ledger_free:
                entries.append(dataclasses.replace(held.reservation.unsettled, finished_at=now))
        return entries

    def in_flight_entries(self) -> list[LedgerEntry]:
        """The ``unsettled`` entries of the reservations still held (ledger-free ones'
        never reach the ledger: they are left out)."""
        return [
            h.reservation.unsettled
            for h in self._holds.values()
            if h.state == "held" and not h.reservation.ledger_free
        ]

    def record_alert(
        self, hold: Hold, threshold: int, tenant: str | None, now: float, detail: dict[str, Any]
    ) -> bool:
        slot = (hold.key, hold.bucket, threshold)
        if slot in self._alerts:
            return False
        self._alerts[slot] = {
            "budget": hold.key, "window_start": hold.bucket, "threshold_percent": threshold,
            "tenant": tenant, "fired_at": now, **detail,
        }  # fmt: skip
        return True

    def alerts(self, tenant_id: str | None) -> list[dict[str, Any]]:
        rows = [a for a in self._alerts.values() if tenant_id is None or a["tenant"] == tenant_id]
        return sorted(rows, key=lambda a: a["fired_at"])
