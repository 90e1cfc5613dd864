"""Usage aggregation over ledger entries (used by in-memory stores and tests)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from farebox.core.records import LedgerEntry, UsageQuery, UsageRow


def group_value(entry: LedgerEntry, group_by: str | None) -> str | None:
    if group_by is None:
        return None
    if group_by == "day":
        return time.strftime("%Y-%m-%d", time.gmtime(entry.started_at))
    if group_by == "hour":
        return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(entry.started_at))
    if group_by == "model":
        return entry.model_served
    if group_by == "key":
        return entry.key_id
    if group_by == "tenant":
        return entry.tenant_id
    value = getattr(entry, group_by)
    return None if value is None else str(value)


def matches(entry: LedgerEntry, query: UsageQuery) -> bool:
    if query.tenant_id is not None and entry.tenant_id != query.tenant_id:
        return False
    if query.start is not None and entry.started_at < query.start:
        return False
    return query.end is None or entry.started_at < query.end


def aggregate(entries: Iterable[LedgerEntry], query: UsageQuery) -> list[UsageRow]:
    totals: dict[str | None, list[int]] = {}
    for entry in entries:
        if not matches(entry, query):
            continue
        row = totals.setdefault(group_value(entry, query.group_by), [0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += entry.input_tokens
        row[2] += entry.output_tokens
        row[3] += entry.cost
        row[4] += entry.revenue
    return [
        UsageRow(group, *values)
        for group, values in sorted(totals.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    ]
