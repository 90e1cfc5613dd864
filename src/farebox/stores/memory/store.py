"""In-process store: for tests and throwaway gateways. Nothing survives a restart."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

from farebox.core.aggregate import aggregate
from farebox.core.budgets import Hold, HoldState
from farebox.core.cache import CacheTally, tally_entries
from farebox.core.records import (
    ApiKey,
    LedgerEntry,
    RequestPage,
    RequestQuery,
    Reservation,
    ReserveOutcome,
    Tenant,
    UsageQuery,
    UsageRow,
)
from farebox.core.tiers import tiered
from farebox.errors import Conflict, NotFound
from farebox.stores.health import Health
from farebox.stores.memory.audit import MemoryAudit
from farebox.stores.memory.budgets import MemoryBudgets
from farebox.stores.memory.credentials import MemoryCredentials
from farebox.stores.memory.credits import MemoryCredits
from farebox.stores.memory.findings import MemoryFindings
from farebox.stores.memory.inbox import MemoryInbox
from farebox.stores.memory.multiplication import MemorySightings
from farebox.stores.memory.pausing import MemoryPauses
from farebox.stores.memory.responses import MemoryResponses
from farebox.stores.memory.rollups import MemoryReports
from farebox.stores.memory.traffic import MemoryTraffic
from farebox.stores.memory.upsell import MemoryUpsell
from farebox.stores.memory.workspaces import MemoryWorkspaces
from farebox.stores.request_log import memory_page
from farebox.stores.tier_usage import fresh, memory_allot

R = TypeVar("R", Tenant, ApiKey)


class MemoryStore(MemoryReports):
    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKey] = {}
        self._by_hash: dict[str, str] = {}
        self._ledger: dict[str, LedgerEntry] = {}
        self._meta: dict[str, str] = {}
        self._epoch = 0
        self._budgets = MemoryBudgets()
        self._breakers: dict[str, float] = {}
        self._cursors: dict[str, int] = {}
        self._dead: dict[tuple[str, str], dict[str, Any]] = {}
        self._probes: dict[str, float] = {}
        self._tier_usage: dict[tuple[str, str], int] = {}  # (tenant, month) -> units used
        self.traffic = MemoryTraffic()
        self.multiplication = MemorySightings()  # account multiplication (issue 15)
        self.pauses = MemoryPauses(self)  # conditional pauses (stores.pausing)
        self.responses = MemoryResponses()
        self.credits = MemoryCredits(self._bump)
        self.credentials = MemoryCredentials(self._bump)  # the vault
        self.inbox = MemoryInbox()
        self.upsell = MemoryUpsell(self.credits.every_grant)
        self.audit = MemoryAudit()  # the audit log (issue 14)
        self.findings = MemoryFindings(lambda: self._ledger.values())  # guardrails (issue 15)
        self.workspaces = MemoryWorkspaces(self._bump, lambda: list(self._keys.values()))

    def _bump(self) -> None:
        self._epoch += 1

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def create_tenant(self, tenant: Tenant) -> None:
        if tenant.id in self._tenants:
            raise Conflict(f"tenant {tenant.id!r} already exists")
        self._tenants[tenant.id] = tenant
        self._epoch += 1

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: t.id)

    async def update_tenant(self, tenant_id: str, changes: dict[str, Any]) -> Tenant:
        return self._update(self._tenants, tenant_id, changes, "tenant")

    async def create_key(self, key: ApiKey) -> None:
        if key.id in self._keys or key.key_hash in self._by_hash:
            raise Conflict(f"key {key.id!r} already exists")
        self._keys[key.id] = key
        self._by_hash[key.key_hash] = key.id
        self._epoch += 1

    async def get_key(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    async def get_key_by_hash(self, key_hash: str) -> ApiKey | None:
        key_id = self._by_hash.get(key_hash)
        return None if key_id is None else self._keys[key_id]

    async def list_keys(self, tenant_id: str | None, kind: str | None = None) -> list[ApiKey]:
        return sorted(
            (
                k
                for k in self._keys.values()
                if (tenant_id is None or k.tenant_id == tenant_id)
                and (kind is None or k.kind == kind)
            ),
            key=lambda k: k.created_at,
        )

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        return self._update(self._keys, key_id, changes, "key")

    def _update(self, table: dict[str, R], row_id: str, changes: dict[str, Any], what: str) -> R:
        current = table.get(row_id)
        if current is None:
            raise NotFound(f"{what} {row_id!r} not found")
        updated = dataclasses.replace(current, **changes)
        table[row_id] = updated
        self._epoch += 1
        return updated

    async def auth_epoch(self) -> int:
        return self._epoch

    @property
    def ledger_health(self) -> Health | None:
        return None  # the ledger writer keeps the flag

    async def probe_write(self) -> bool:
        return await self.ping()

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        self._append(entries)

    def append_ledger_now(self, entries: Sequence[LedgerEntry]) -> bool:
        self._append(entries)
        return True

    def _append(self, entries: Sequence[LedgerEntry]) -> None:
        if tiered(entries):  # a tiered plan's revenue (stores/tier_usage.py)
            written = [e.request_id for e in tiered(entries) if self._written(e.request_id)]
            memory_allot(self._tier_usage, fresh(entries, written))
        self._budgets.settle(entries, self._ledger)
        for entry in entries:
            self._ledger.setdefault(entry.request_id, entry)

    def _written(self, request_id: str) -> bool:
        have = self._ledger.get(request_id)
        return have is not None and have.status != "unsettled"

    async def reserve(self, reservation: Reservation, *, busy: bool = False) -> ReserveOutcome:
        return self._budgets.reserve(reservation)

    async def settle_counters(self, reservation: Reservation) -> None:
        self._budgets.settle([reservation.unsettled], {})

    async def extend_leases(self, ids: Sequence[str], expires_at: float) -> None:
        self._budgets.extend(ids, expires_at)

    async def reclaim_expired(self, now: float) -> list[LedgerEntry]:
        entries = self._budgets.expired(now)
        for entry in entries:
            self._ledger.setdefault(entry.request_id, entry)
        return entries

    async def budget_states(self, holds: Sequence[Hold]) -> list[HoldState]:
        return [self._budgets.state(h) for h in holds]

    async def record_alert(
        self, hold: Hold, threshold: int, tenant: str | None, now: float, detail: dict[str, Any]
    ) -> bool:
        return self._budgets.record_alert(hold, threshold, tenant, now, detail)

    async def alerts(self, tenant_id: str | None) -> list[dict[str, Any]]:
        return self._budgets.alerts(tenant_id)

    async def ledger(
        self, tenant_id: str | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        rows = [e for e in self._ledger.values() if tenant_id is None or e.tenant_id == tenant_id]
        rows.sort(key=lambda e: (e.started_at, e.request_id))
        if limit is None:
            return rows
        return rows[-limit:] if limit > 0 else []

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        return aggregate(self._ledger.values(), query)

    async def requests(self, query: RequestQuery) -> RequestPage:
        return memory_page(list(self._ledger.values()), query)

    async def cache_tallies(
        self, tenant_id: str | None, start: float | None, end: float | None
    ) -> list[CacheTally]:
        return tally_entries(self._ledger.values(), tenant_id, start, end)

    async def get_meta(self, name: str) -> str | None:
        return self._meta.get(name)

    async def put_meta_if_absent(self, name: str, value: str) -> str:
        return self._meta.setdefault(name, value)

    # circuit breakers ----------------------------------------------------------------------
    async def breakers(self) -> dict[str, float]:
        return {d: u for d, u in self._breakers.items() if u > 0}

    async def set_breaker(self, deployment: str, open_until: float) -> None:
        self._breakers[deployment] = open_until

    async def claim_probe(self, deployment: str, now: float, until: float) -> bool:
        if self._probes.get(deployment, 0.0) > now:
            return False
        self._probes[deployment] = until
        return True

    # billing export: positions are insertion order (1-based) ----------------------------------
    async def ledger_since(self, seq: int, limit: int) -> list[tuple[int, LedgerEntry]]:
        """Positions are insertion order; placeholders are not in the outbox."""
        found = [(i + 1, e) for i, e in enumerate(self._ledger.values()) if i + 1 > seq]
        return [(p, e) for p, e in found if e.status != "unsettled"][:limit]

    async def claim_exporter(self) -> bool:
        return True

    async def export_cursor(self, sink: str) -> int:
        return self._cursors.get(sink, 0)

    async def set_export_cursor(self, sink: str, seq: int) -> None:
        self._cursors[sink] = max(seq, self._cursors.get(sink, 0))

    async def add_dead_letters(self, sink: str, items: Sequence[dict[str, Any]]) -> None:
        for item in items:
            self._dead[(sink, item["key"])] = {"sink": sink, **item}

    async def dead_letters(
        self, sink: str | None = None, since: int | None = None
    ) -> list[dict[str, Any]]:
        rows = [d for (s, _), d in self._dead.items() if (sink is None or s == sink)
                and (since is None or int(d["event"]["timestamp"]) >= since)]  # fmt: skip
        return sorted(rows, key=lambda d: (d["at"], d["key"]))

    async def entries_by_id(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        return {r: self._ledger[r] for r in request_ids if r in self._ledger}

    async def dead_letter_count(self, sink: str | None = None) -> int:
        return sum(1 for s, _ in self._dead if sink is None or s == sink)

    async def remove_dead_letters(self, sink: str, keys: Sequence[str]) -> None:
        for key in keys:
            self._dead.pop((sink, key), None)
