"""Budget counters and leased reservations in process memory (same semantics as SQLite)."""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping, Sequence
from typing import Any

from farebox.core.budgets import Hold, HoldState, rollover, settled_amount
from farebox.core.records import LedgerEntry, Reservation, ReserveOutcome


@dataclasses.dataclass(slots=True)
class _Held:
    reservation: Reservation
    expires_at: float
    state: str = "held"


class MemoryBudgets:
    def __init__(self) -> None:
        self._used: dict[tuple[str, float], int] = {}
        self._reserved: dict[tuple[str, float], int] = {}
        self._holds: dict[str, _Held] = {}
        self._alerts: dict[tuple[str, float, int], dict[str, Any]] = {}

    def _sum(self, table: dict[tuple[str, float], int], hold: Hold) -> int:
        return sum(
            v
            for (k, b), v in table.items()
            if k == hold.key and hold.buckets_from <= b <= hold.bucket
        )

    def state(self, hold: Hold) -> HoldState:
        limit = hold.limit
        if hold.rollover_bucket is not None:
            limit += rollover(hold, self._used.get((hold.key, hold.rollover_bucket), 0))
        live = [
            b for (k, b), v in (*self._used.items(), *self._reserved.items())
            if k == hold.key and v and hold.buckets_from <= b <= hold.bucket
        ]  # fmt: skip
        used, reserved = self._sum(self._used, hold), self._sum(self._reserved, hold)
        return HoldState(hold, used, reserved, limit, min(live, default=None))

    def reserve(self, reservation: Reservation) -> ReserveOutcome:
        states = [self.state(h) for h in reservation.holds]
        held = [reservation.held(h) for h in reservation.holds]
        for current, amount in zip(states, held, strict=True):
            if current.used + current.reserved + amount > current.limit:
                return ReserveOutcome(False, states, current)
        for hold, amount in zip(reservation.holds, held, strict=True):
            slot = (hold.key, hold.bucket)
            self._reserved[slot] = self._reserved.get(slot, 0) + amount
        self._holds[reservation.id] = _Held(reservation, reservation.expires_at)
        after = [
            HoldState(s.hold, s.used, s.reserved + amount, s.limit, s.oldest)
            for s, amount in zip(states, held, strict=True)
        ]
        return ReserveOutcome(True, after)

    def settle(
        self, entries: Sequence[LedgerEntry], ledger: MutableMapping[str, LedgerEntry]
    ) -> None:
        for entry in entries:
            held = self._holds.get(entry.reservation_id or "")
            if held is None or held.state == "settled_late":
                continue
            live = held.state == "held"  # a reclaimed hold was already released
            for hold in held.reservation.holds:
                slot = (hold.key, hold.bucket)
                amount = held.reservation.held(hold) if live else 0
                spent = settled_amount(hold.unit, entry.cost, entry.tokens)
                self._reserved[slot] = self._reserved.get(slot, 0) - amount
                self._used[slot] = self._used.get(slot, 0) + spent
            if held.state == "held":
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
        entries = []
        for held in self._holds.values():
            if held.state != "held" or held.expires_at >= now:
                continue
            for hold in held.reservation.holds:
                slot = (hold.key, hold.bucket)
                self._reserved[slot] = self._reserved.get(slot, 0) - held.reservation.held(hold)
            held.state = "reclaimed"
            entries.append(dataclasses.replace(held.reservation.unsettled, finished_at=now))
        return entries

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
