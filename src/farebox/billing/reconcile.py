"""Reconciliation: for each billing sink, tenant and meter in a month, the ledger's total
against what was delivered, dead-lettered and still waiting (the three always add up to the
ledger). ``matched`` means all of it was delivered.

What it reads, so it stays fast on a ledger of millions of entries: the ledger's totals from
the hourly rollups (``ReportStore.series``: a few sums per tenant, never the month's
entries); what is waiting from the outbox after each sink's cursor only (the export backlog,
read page by page and summed as it goes); what is dead from the sink's dead letters stamped
at or after the month's start only. Delivered is the rest.

A month holds the entries whose request *started* in it (UTC), as usage, margins and every
report count them, and dead letters are attributed the same way, by the start of the entries
they carry (an event is stamped with the request's end, or the hour it ended in, which may be
the next month):

- a per-request event's key names its request id: the entries are looked up by id (a batch
  of primary-key reads);
- an hourly event (or a per-request key too long to read the id back) carries a tenant and
  the hour its entries *ended* in: the tenant's entries that started in the month, up to the
  end of that hour, are read page by page (the request log, on the reports' connection) and
  those that ended in the hour are its entries.

An entry that is dead and also back in the outbox after the cursor (a replay) counts once,
as waiting.

The plan meters are valued with each tenant's plan terms now (``terms``: a tenant id to its
``PlanTerms``, the exporter's ``terms_for``), as the exporter values them. Their ledger totals
come from the same rollups: ``credits_burned`` is a prepaid tenant's revenue (every billable
status), ``per_request_charges`` a per-request tenant's revenue less the per-token part of
its token sums (cache hits aside), which is exact because that part is linear in the tokens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from farebox.billing.exporter import SinkRunner
from farebox.billing.margins import month_window
from farebox.core.meters import (
    BILLED,
    CREDITS,
    HOUR,
    NO_TERMS,
    PLAN_METERS,
    PlanTerms,
    billable,
    hour_of,
    parse,
    per_request,
    raw_value,
    render,
    unit_of,
)
from farebox.core.pricing import cost
from farebox.core.records import LedgerEntry, RequestQuery, SeriesPoint, SeriesQuery
from farebox.core.usage import Usage
from farebox.sinks.events import KEY_PREFIX, event_key
from farebox.stores.base import ExportStore, ReportStore

PAGE = 5000
Sums = dict[tuple[str, str], int]  # (tenant, meter) -> raw value (pico-USD or a count)
Slot = tuple[str, str]
TermsOf = Callable[[str], Awaitable[PlanTerms]]  # a tenant id -> its plan terms now


class Terms:
    """Each tenant's plan terms, looked up once per reconciliation."""

    def __init__(self, lookup: TermsOf | None) -> None:
        self._lookup = lookup
        self.known: dict[str, PlanTerms] = {}

    async def of(self, tenant: str) -> PlanTerms:
        if tenant not in self.known:
            self.known[tenant] = NO_TERMS if self._lookup is None else await self._lookup(tenant)
        return self.known[tenant]

    async def load(self, tenants: Iterable[str]) -> dict[str, PlanTerms]:
        for tenant in sorted(set(tenants)):
            await self.of(tenant)
        return self.known


class ReconcileStore(ExportStore, ReportStore, Protocol):
    """What reconciliation reads: the rollups' totals, the outbox after each cursor, the
    dead letters, and the entries they carry."""


@dataclass
class Dead:
    """The month's dead values, per entry, so an entry found waiting again can leave."""

    by_entry: dict[str, list[tuple[Slot, int]]] = field(default_factory=dict)

    def add(self, request_id: str, slot: Slot, raw: int) -> None:
        self.by_entry.setdefault(request_id, []).append((slot, raw))

    def sums(self) -> Sums:
        out: Sums = {}
        for parts in self.by_entry.values():
            for slot, raw in parts:
                out[slot] = out.get(slot, 0) + raw
        return out


@dataclass
class Scan:
    """A tenant's dead letters to match against its entries: hourly ones by (hour, meter),
    per-request ones whose key could not be read back by (end second, key, meter)."""

    hours: dict[int, set[str]] = field(default_factory=dict)
    keys: dict[int, list[tuple[str, str, int]]] = field(default_factory=dict)

    def until(self) -> float:
        return max([h + HOUR for h in self.hours] + [t + 1 for t in self.keys])


async def reconcile(
    store: ReconcileStore,
    runners: Sequence[SinkRunner],
    month: str,
    tenant_id: str | None = None,
    terms: TermsOf | None = None,
) -> dict[str, Any]:
    start, end = month_window(month)
    planned = any(set(r.config.meters) & set(PLAN_METERS) for r in runners)
    book = Terms(terms if planned else None)  # no sink sends a plan meter: no plan is read
    ledger = await ledger_totals(store, start, end, tenant_id, book)
    rows = []
    for runner in runners:
        meters: list[str] = list(runner.config.meters)
        found = await dead(store, runner, start, end, tenant_id, book)
        pending = await waiting(store, runner.name, meters, start, end, tenant_id, found, book)
        lost = found.sums()
        slots = {s for s in (*ledger, *pending, *lost) if s[1] in meters}
        for tenant, meter in sorted(slots):
            slot = (tenant, meter)
            total, wait, gone = ledger.get(slot, 0), pending.get(slot, 0), lost.get(slot, 0)
            if not (total or wait or gone):
                continue
            ok, plan = total - wait - gone, await book.of(tenant)
            rows.append({"sink": runner.name, "tenant": tenant, "meter": meter,
                         "ledger": render(meter, total, plan),
                         "delivered": render(meter, ok, plan), "dead": render(meter, gone, plan),
                         "pending": render(meter, wait, plan), "unit": unit_of(meter),
                         "matched": ok == total})  # fmt: skip
    return {"object": "reconciliation", "month": month, "data": rows,
            "matched": all(r["matched"] for r in rows)}  # fmt: skip


async def ledger_totals(
    store: ReportStore, start: float, end: float, tenant_id: str | None, book: Terms | None = None
) -> Sums:
    """Every meter's total per tenant over the billable entries that started in
    ``[start, end)``, from the rollups: one sum per tenant and billable status."""
    sums: Sums = {}
    served: dict[str, list[SeriesPoint]] = {}  # per tenant, its points of every status but hits
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
            if status != "cache_hit":
                served.setdefault(p.group, []).append(p)
    for tenant in sorted({t for t, _ in sums}):
        plan = await book.of(tenant) if book is not None else NO_TERMS
        if plan.credits is not None:
            sums[(tenant, CREDITS)] = sums.get((tenant, "revenue_usd"), 0)
        if plan.per_request is not None:
            sums[(tenant, "per_request_charges")] = charges(served.get(tenant, []), plan)
    return sums


def charges(points: Sequence[SeriesPoint], plan: PlanTerms) -> int:
    """The per-request charges in these rollup points: their revenue less the per-token part
    of their token sums (``core.meters.request_charge`` summed: it is linear in the tokens)."""
    price = plan.per_request.tokens if plan.per_request is not None else None
    revenue = sum(p.revenue for p in points)
    if price is None:
        return revenue
    usage = Usage(input_tokens=sum(p.input_tokens for p in points),
                  cached_input_tokens=sum(p.cached_input_tokens for p in points),
                  cache_write_5m_tokens=sum(p.cache_write_tokens for p in points),
                  output_tokens=sum(p.output_tokens for p in points))  # fmt: skip
    return revenue - cost(usage, price)


async def waiting(
    store: ExportStore, sink: str, meters: list[str], start: float, end: float,
    tenant_id: str | None, found: Dead | None = None, book: Terms | None = None,
) -> Sums:  # fmt: skip
    """What the sink has still to send of the month: the outbox after its cursor, summed page
    by page (memory bounded by a page, time by the backlog). An entry waiting again is no
    longer dead (``found`` forgets it)."""
    sums: Sums = {}
    seq = await store.export_cursor(sink)
    while page := await store.ledger_since(seq, PAGE):
        seq = page[-1][0]
        month = [e for _, e in page if start <= e.started_at < end
                 and (tenant_id is None or e.tenant_id == tenant_id)]  # fmt: skip
        terms = await book.load(e.tenant_id for e in month) if book is not None else None
        for r in per_request(month, meters, terms):
            sums[(r.tenant, r.meter)] = sums.get((r.tenant, r.meter), 0) + r.raw
        if found is not None:
            for e in month:
                found.by_entry.pop(e.request_id, None)
        if len(page) < PAGE:
            break
    return sums


def request_id(key: str, tenant: str, meter: str) -> str | None:
    """The request id a per-request event key names, or None when the key was shortened."""
    parts = key.split(":")
    if len(parts) != 4 or parts[0] != KEY_PREFIX:
        return None
    rid = unquote(parts[2])
    return rid if event_key(tenant, rid, meter) == key else None


async def dead(
    store: ReconcileStore, runner: SinkRunner, start: float, end: float, tenant_id: str | None,
    book: Terms | None = None,
) -> Dead:  # fmt: skip
    """The sink's dead letters whose entries started in the month, per entry. A letter is
    hourly by its key (``h<hour>``), so letters from before a sink changed its granularity
    are still read right."""
    meters, book = set(runner.config.meters), book or Terms(None)
    found, scans = Dead(), dict[str, Scan]()
    by_id: dict[str, list[tuple[str, str, int]]] = {}  # request id -> (tenant, meter, raw)
    for letter in await store.dead_letters(runner.name, since=int(start)):
        event = letter["event"]
        tenant, meter, ts = str(event["tenant"]), str(event["meter"]), int(event["timestamp"])
        if meter not in meters or (tenant_id is not None and tenant != tenant_id):
            continue
        scan = scans.setdefault(tenant, Scan())
        if str(letter["key"]) == event_key(tenant, f"h{ts}", meter):  # an hourly event
            scan.hours.setdefault(ts, set()).add(meter)
            continue
        raw = parse(meter, str(event["value"]), await book.of(tenant))
        rid = request_id(str(letter["key"]), tenant, meter)
        if rid is None:
            scan.keys.setdefault(ts, []).append((str(letter["key"]), meter, raw))
        else:
            by_id.setdefault(rid, []).append((tenant, meter, raw))
    entries = await store.entries_by_id(list(by_id))
    for rid, parts in by_id.items():
        e = entries.get(rid)
        for tenant, meter, raw in parts:
            if e is not None and e.tenant_id == tenant and start <= e.started_at < end:
                found.add(rid, (tenant, meter), raw)
    for tenant, scan in sorted(scans.items()):
        if scan.hours or scan.keys:
            await match(store, tenant, scan, start, end, found, await book.of(tenant))
    return found


async def match(
    store: ReportStore, tenant: str, scan: Scan, start: float, end: float, found: Dead,
    terms: PlanTerms = NO_TERMS,
) -> None:  # fmt: skip
    """Find a tenant's dead letters' entries among those that started in the month, up to
    the last end the letters name: read newest first, a page at a time."""
    query = RequestQuery(tenant_id=tenant, start=start, end=min(end, scan.until()), limit=PAGE)
    while True:
        page = await store.requests(query)
        for e in page.entries:
            if billable(e):
                carried(e, scan, found, terms)
        if page.next_cursor is None:
            return
        query = RequestQuery(tenant_id=tenant, start=query.start, end=query.end,
                             cursor=page.next_cursor, limit=PAGE)  # fmt: skip


def carried(e: LedgerEntry, scan: Scan, found: Dead, terms: PlanTerms = NO_TERMS) -> None:
    """Add what ``e`` carries of the scanned letters to ``found``."""
    for meter in sorted(scan.hours.get(hour_of(e.finished_at), ())):
        raw = raw_value(e, meter, terms)
        if raw:
            found.add(e.request_id, (e.tenant_id, meter), raw)
    for key, meter, raw in scan.keys.get(int(e.finished_at), ()):
        if event_key(e.tenant_id, e.request_id, meter) == key:
            found.add(e.request_id, (e.tenant_id, meter), raw)
