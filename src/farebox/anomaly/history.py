"""Each loud tenant's hourly history, kept in memory and refreshed by reading only new hours.

A baseline needs up to ``history_days`` of hour rows. Reading them all again every hour for
every loud tenant would cost thousands of rows each time; instead the first read takes the
whole range, and later reads take only the hours since the last one (the last two again,
since other processes may still have been flushing into them). A tenant that was not loud
for a whole hour is forgotten, so memory follows the set of busy tenants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from farebox.core.anomaly import DAY, HOUR, ZERO, Rate, TrafficRow
from farebox.stores.base import TrafficStore

REREAD_HOURS = 2


@dataclass(slots=True)
class TenantHistory:
    read_until: int  # hours before this one are read (the hour of the last read)
    total: dict[int, Rate] = field(default_factory=dict)  # the tenant's series
    keys: dict[str, dict[int, Rate]] = field(default_factory=dict)  # each key's series
    used_at: int = 0

    def merge(self, rows: list[TrafficRow], replace_from: int, keep_from: int) -> None:
        for hours in [self.total, *self.keys.values()]:
            for hour in [h for h in hours if h >= replace_from or h < keep_from]:
                del hours[hour]
        for row in rows:
            rate = Rate(row.requests, row.spend)
            self.keys.setdefault(row.key_id, {})[row.start] = rate
            self.total[row.start] = self.total.get(row.start, ZERO) + rate

    def series(self, key_id: str | None = None) -> dict[int, Rate]:
        """The tenant's hourly series, or one key's: read-only."""
        return self.total if key_id is None else self.keys.get(key_id, {})


class HistoryCache:
    def __init__(self, store: TrafficStore) -> None:
        self._store = store
        self._tenants: dict[str, TenantHistory] = {}

    async def get(self, tenant_id: str, hour: int, days: int) -> TenantHistory:
        """The tenant's hour rows of the ``days`` before ``hour``."""
        keep_from = hour - days * DAY
        found = self._tenants.get(tenant_id)
        if found is None:
            rows = await self._store.history(tenant_id, keep_from)
            found = self._tenants[tenant_id] = TenantHistory(hour)
            found.merge(rows, hour, keep_from)
        elif found.read_until < hour:
            start = max(found.read_until - REREAD_HOURS * HOUR, keep_from)
            found.merge(await self._store.history(tenant_id, start), start, keep_from)
            found.read_until = hour
        found.used_at = hour
        return found

    def forget_idle(self, hour: int) -> None:
        """Drop tenants not used in the last hour."""
        for tenant_id in [t for t, h in self._tenants.items() if h.used_at < hour - HOUR]:
            del self._tenants[tenant_id]
