"""Reconciliation: for each billing sink, tenant and meter in a month, the ledger's total
against what was delivered, dead-lettered and still waiting (the three always add up to the
ledger). ``matched`` means all of it was delivered.

What it reads, so it stays fast on a ledger of millions of entries: the ledger's totals from
the hourly rollups (``ReportStore.series``: a few sums per tenant, never the month's
entries); what is waiting from the outbox after each sink's cursor only (the export backlog,
read page by page and summed as it goes); what is dead from the sink's dead letters only.
Delivered is the rest.

A month holds the entries whose request *started* in it (UTC), as usage, margins and every
report count them. A dead letter carries the time its event was stamped with (the request's
end, or the hour it ended in, for hourly sinks), so a dead-lettered request that started in
one month and ended in the next counts as dead in the month it ended in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from farebox.billing.exporter import SinkRunner
from farebox.billing.margins import month_window
from farebox.core.meters import BILLED, MONEY_METERS, per_request, render
from farebox.core.money import parse_usd
from farebox.core.records import SeriesQuery
from farebox.stores.base import ExportStore, ReportStore

PAGE = 5000
Sums = dict[tuple[str, str], int]  # (tenant, meter) -> raw value (pico-USD or a count)


class ReconcileStore(ExportStore, ReportStore, Protocol):
    """What reconciliation reads: the rollups' totals, the outbox after each cursor, and
    the dead letters."""


async def reconcile(
    store: ReconcileStore, runners: Sequence[SinkRunner], month: str, tenant_id: str | None = None
) -> dict[str, Any]:
    start, end = month_window(month)
    ledger = await ledger_totals(store, start, end, tenant_id)
    rows = []
    for runner in runners:
        meters: list[str] = list(runner.config.meters)
        pending = await waiting(store, runner.name, meters, start, end, tenant_id)
        lost = await dead(store, runner.name, meters, start, end, tenant_id)
        slots = {s for s in (*ledger, *pending, *lost) if s[1] in meters}
        for tenant, meter in sorted(slots):
            slot = (tenant, meter)
            total, wait, gone = ledger.get(slot, 0), pending.get(slot, 0), lost.get(slot, 0)
            if not (total or wait or gone):
                continue
            ok = total - wait - gone
            rows.append({"sink": runner.name, "tenant": tenant, "meter": meter,
                         "ledger": render(meter, total), "delivered": render(meter, ok),
                         "dead": render(meter, gone), "pending": render(meter, wait),
                         "unit": "usd" if meter in MONEY_METERS else "count",
                         "matched": ok == total})  # fmt: skip
    return {"object": "reconciliation", "month": month, "data": rows,
            "matched": all(r["matched"] for r in rows)}  # fmt: skip


async def ledger_totals(
    store: ReportStore, start: float, end: float, tenant_id: str | None
) -> Sums:
    """Every meter's total per tenant over the billable entries that started in
    ``[start, end)``, from the rollups: one sum per tenant and billable status."""
    sums: Sums = {}
    for status in sorted(BILLED):
        query = SeriesQuery(start, end, bucket="all", group_by="tenant", tenant_id=tenant_id,
                            status=status)  # fmt: skip
        for p in await store.series(query):
            if p.group is None:
                continue
            values = {"input_tokens": p.input_tokens, "output_tokens": p.output_tokens,
                      "cost_usd": p.cost, "revenue_usd": p.revenue, "requests": p.requests,
                      "cache_hits": p.requests if status == "cache_hit" else 0}  # fmt: skip
            for meter, raw in values.items():
                sums[(p.group, meter)] = sums.get((p.group, meter), 0) + raw
    return sums


async def waiting(
    store: ExportStore, sink: str, meters: list[str], start: float, end: float,
    tenant_id: str | None,
) -> Sums:  # fmt: skip
    """What the sink has still to send of the month: the outbox after its cursor, summed page
    by page (memory bounded by a page, time by the backlog)."""
    sums: Sums = {}
    seq = await store.export_cursor(sink)
    while page := await store.ledger_since(seq, PAGE):
        seq = page[-1][0]
        month = [e for _, e in page if start <= e.started_at < end
                 and (tenant_id is None or e.tenant_id == tenant_id)]  # fmt: skip
        for r in per_request(month, meters):
            sums[(r.tenant, r.meter)] = sums.get((r.tenant, r.meter), 0) + r.raw
        if len(page) < PAGE:
            break
    return sums


async def dead(
    store: ExportStore, sink: str, meters: list[str], start: float, end: float,
    tenant_id: str | None,
) -> Sums:  # fmt: skip
    """The sink's dead letters of the month (by the time their events carry)."""
    sums: Sums = {}
    for letter in await store.dead_letters(sink):
        event = letter["event"]
        tenant, meter = str(event["tenant"]), str(event["meter"])
        if not start <= int(event["timestamp"]) < end or meter not in meters:
            continue
        if tenant_id is not None and tenant != tenant_id:
            continue
        value = str(event["value"])
        raw = parse_usd(value) if meter in MONEY_METERS else int(value)
        sums[(tenant, meter)] = sums.get((tenant, meter), 0) + raw
    return sums
