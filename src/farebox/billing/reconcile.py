"""Reconciliation: for each billing sink, tenant and meter in a month, the ledger's total
against what was delivered, dead-lettered and still waiting (the three always add up to the
ledger). ``matched`` means all of it was delivered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from farebox.billing.exporter import SinkRunner
from farebox.billing.margins import month_window
from farebox.core.meters import MONEY_METERS, per_request, render
from farebox.sinks.events import event_key
from farebox.stores.base import ExportStore

PAGE = 5000


async def reconcile(
    store: ExportStore, runners: Sequence[SinkRunner], month: str, tenant_id: str | None = None
) -> dict[str, Any]:
    start, end = month_window(month)
    entries = []
    seq = 0
    while page := await store.ledger_since(seq, PAGE):
        seq = page[-1][0]
        entries += [(s, e) for s, e in page if start <= e.finished_at < end
                    and (tenant_id is None or e.tenant_id == tenant_id)]  # fmt: skip
    rows = []
    for runner in runners:
        cursor = await store.export_cursor(runner.name)
        dead = {d["key"] for d in await store.dead_letters(runner.name)}
        sums: dict[tuple[str, str], list[int]] = {}  # (tenant, meter) -> ledger, ok, dead, wait
        for s, e in entries:
            for r in per_request([e], runner.config.meters):
                slot = sums.setdefault((r.tenant, r.meter), [0, 0, 0, 0])
                slot[0] += r.raw
                if s > cursor:
                    slot[3] += r.raw
                elif event_key(r.tenant, r.unit, r.meter) in dead:
                    slot[2] += r.raw
                else:
                    slot[1] += r.raw
        for (tenant, meter), (ledger, ok, lost, waiting) in sorted(sums.items()):
            rows.append({"sink": runner.name, "tenant": tenant, "meter": meter,
                         "ledger": render(meter, ledger), "delivered": render(meter, ok),
                         "dead": render(meter, lost), "pending": render(meter, waiting),
                         "unit": "usd" if meter in MONEY_METERS else "count",
                         "matched": ok == ledger})  # fmt: skip
    return {"object": "reconciliation", "month": month, "data": rows,
            "matched": all(r["matched"] for r in rows)}  # fmt: skip
