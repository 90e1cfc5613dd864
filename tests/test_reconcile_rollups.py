"""Issue [11]: reconciliation reads the rollups for the ledger's totals, the outbox only after
each sink's cursor for what waits, and the dead letters for what is dead; it never pages
through the whole outbox. Its answer still adds up: ledger = delivered + dead + pending."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.billing.reconcile import reconcile
from farebox.core.meters import BILLED, hour_of, raw_value, render
from farebox.core.records import LedgerEntry
from farebox.sinks.events import event_key
from farebox.stores.memory.store import MemoryStore
from farebox.stores.sqlite.store import SQLiteStore
from tests.contracts.builders import T0, entry

JUNE, JULY = "2025-06", "2025-07"
JULY_1 = 1_751_328_000.0  # 2025-07-01T00:00:00Z
METERS = ["requests", "input_tokens", "cost_usd", "revenue_usd", "cache_hits"]


class Counting:
    """The store, counting where the outbox is read from."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.read_from: list[int] = []

    async def ledger_since(self, seq: int, limit: int) -> Any:
        self.read_from.append(seq)
        return await self._store.ledger_since(seq, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


RUNNER = SimpleNamespace(name="s", config=SimpleNamespace(meters=METERS, granularity="request"))


def letter(e: LedgerEntry, meter: str, raw: int | None = None) -> dict[str, Any]:
    """The dead letter of ``e``'s per-request event on ``meter``, as the exporter writes it."""
    key = event_key(e.tenant_id, e.request_id, meter)
    value = render(meter, raw_value(e, meter) if raw is None else raw)
    return {"key": key, "reason": "no customer", "at": T0,
            "event": {"tenant": e.tenant_id, "meter": meter, "value": value, "customer": {},
                      "timestamp": int(e.finished_at), "key": key, "properties": {}}}  # fmt: skip


def traffic() -> list[LedgerEntry]:
    out = []
    for i in range(40):
        out.append(entry(
            f"r{i:02d}", tenant_id="ab"[i % 2], input_tokens=10 + i, cost=1000 * i + 7,
            revenue=2000 * i, status=["ok", "cache_hit", "error", "unsettled"][i % 4],
            # the last ones start in June and finish in July; a few start in July
            started_at=JULY_1 - 3600 + 100 * i if i < 36 else JULY_1 + i,
            finished_at=JULY_1 - 3600 + 100 * i + 3000 if i < 36 else JULY_1 + i + 1,
        ))  # fmt: skip
    return out


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "r.db")
    await s.open()
    yield s
    await s.close()


def sums(entries: list[LedgerEntry], month_start: float, month_end: float) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for e in entries:
        if e.status in BILLED and month_start <= e.started_at < month_end:
            for m in METERS:
                out[(e.tenant_id, m)] = out.get((e.tenant_id, m), 0) + raw_value(e, m)
    return {k: v for k, v in out.items() if v}


async def test_the_answer_adds_up_and_reads_only_the_backlog(store: Any) -> None:
    entries = traffic()
    for i in range(0, 40, 8):
        await store.append_ledger(entries[i : i + 8])
    positions = await store.ledger_since(0, 1000)
    cursor = positions[20][0]  # the sink has sent the first 21 outbox entries
    await store.set_export_cursor("s", cursor)
    sent = [e for s, e in positions if s <= cursor]
    gone = [e for e in sent if e.tenant_id == "a" and e.status == "ok"][:2]
    await store.add_dead_letters("s", [letter(e, "cost_usd") for e in gone])
    counting = Counting(store)
    runner = RUNNER
    june = await reconcile(counting, [runner], JUNE)  # type: ignore[arg-type]
    assert min(counting.read_from) == cursor  # never from the start of the outbox

    want = sums(entries, JULY_1 - 30 * 86_400, JULY_1)
    waiting = sums([e for s, e in positions if s > cursor], JULY_1 - 30 * 86_400, JULY_1)
    dead_cost = {e.tenant_id: 0 for e in gone}
    for e in gone:
        if e.started_at < JULY_1:  # by start, as the ledger side
            dead_cost[e.tenant_id] += e.cost
    rows = {(r["tenant"], r["meter"]): r for r in june["data"]}
    assert set(rows) == set(want)
    for slot, total in want.items():
        row = rows[slot]
        gone_raw = dead_cost.get(slot[0], 0) if slot[1] == "cost_usd" else 0
        wait = waiting.get(slot, 0)
        assert row["ledger"] == render(slot[1], total)
        assert row["pending"] == render(slot[1], wait)
        assert row["dead"] == render(slot[1], gone_raw)
        assert row["delivered"] == render(slot[1], total - wait - gone_raw)
        assert row["matched"] == (wait == gone_raw == 0)
    assert not june["matched"]
    july = await reconcile(store, [runner], JULY, tenant_id="b")  # type: ignore[arg-type]
    assert {r["tenant"] for r in july["data"]} == {"b"}
    assert {(r["tenant"], r["meter"]): r["ledger"] for r in july["data"]} == {
        k: render(k[1], v) for k, v in sums(entries, JULY_1, JULY_1 + 31 * 86_400).items()
        if k[0] == "b"
    }  # fmt: skip


async def test_a_dead_request_crossing_the_month_is_dead_in_the_month_it_started(
    store: Any,
) -> None:
    # starts 2025-06-30T23:59:50Z, ends 2025-07-01T00:00:20Z, and the sink refused it
    crossing = entry("cross", tenant_id="a", cost=5_000, revenue=9_000, input_tokens=7,
                     started_at=JULY_1 - 10, finished_at=JULY_1 + 20)  # fmt: skip
    await store.append_ledger([crossing])
    ((seq, _),) = await store.ledger_since(0, 10)
    await store.set_export_cursor("s", seq)
    await store.add_dead_letters("s", [letter(crossing, m) for m in METERS
                                       if raw_value(crossing, m)])  # fmt: skip
    june = await reconcile(store, [RUNNER], JUNE)  # type: ignore[arg-type]
    july = await reconcile(store, [RUNNER], JULY)  # type: ignore[arg-type]
    assert june["matched"] is False
    cost = next(r for r in june["data"] if r["meter"] == "cost_usd")
    assert (cost["ledger"], cost["dead"], cost["delivered"]) == (
        render("cost_usd", 5_000), render("cost_usd", 5_000), render("cost_usd", 0),
    )  # fmt: skip
    assert all(not r["delivered"].startswith("-") for r in july["data"])
    assert july["data"] == [] and july["matched"] is True


AUGUST_1 = 1_754_006_400.0  # 2025-08-01T00:00:00Z
JUNE_1 = 1_748_736_000.0  # 2025-06-01T00:00:00Z
STATUSES = sorted(BILLED) + ["unsettled"]


@st.composite
def drawn_entries(draw: st.DrawFn) -> list[LedgerEntry]:
    """Entries around the June/July boundary, some crossing it, some with ids long enough
    that their event keys are shortened (the id cannot be read back)."""
    out = []
    for i in range(draw(st.integers(1, 10))):
        start = JULY_1 + draw(st.integers(-3 * 3600, 2 * 3600))
        rid = f"r{i}" + ("x" * 90 if draw(st.booleans()) else "")
        out.append(entry(
            rid, tenant_id=draw(st.sampled_from("ab")), status=draw(st.sampled_from(STATUSES)),
            input_tokens=draw(st.integers(0, 50)), cost=draw(st.integers(0, 10**9)),
            revenue=draw(st.integers(0, 10**9)), started_at=start,
            finished_at=start + draw(st.sampled_from([0, 0.5, 30, 3599.5, 3600, 7300])),
        ))  # fmt: skip
    return out


def hourly_letters(dead: list[LedgerEntry]) -> list[dict[str, Any]]:
    """The dead letters of hourly events: one per tenant, ending hour and meter."""
    sums: dict[tuple[str, int, str], int] = {}
    for e in dead:
        for m in METERS:
            slot = (e.tenant_id, hour_of(e.finished_at), m)
            sums[slot] = sums.get(slot, 0) + raw_value(e, m)
    out = []
    for (tenant, hour, m), raw in sums.items():
        key = event_key(tenant, f"h{hour}", m)
        out.append({"key": key, "reason": "r", "at": T0, "event": {
            "tenant": tenant, "meter": m, "value": render(m, raw), "customer": {},
            "timestamp": hour, "key": key, "properties": {}}})  # fmt: skip
    return [d for d in out if d["event"]["value"] not in ("0", "0.000000000000")]


async def check_months(
    store: Any, entries: list[LedgerEntry], cut: int, dead_pick: list[bool], hourly: bool
) -> None:
    await store.append_ledger(entries)
    positions = await store.ledger_since(0, 1000)
    cursor = positions[cut - 1][0] if cut else 0
    await store.set_export_cursor("s", cursor)
    sent = [e for p, e in positions if p <= cursor]
    picked = [e for e, pick in zip(sent, dead_pick, strict=False) if pick]
    if hourly:  # an hourly event carries every sent entry of its tenant and ending hour
        hours = {(e.tenant_id, hour_of(e.finished_at)) for e in picked}
        dead = [e for e in sent if (e.tenant_id, hour_of(e.finished_at)) in hours]
        letters = hourly_letters(dead)
    else:
        dead = picked
        letters = [letter(e, m) for e in dead for m in METERS if raw_value(e, m)]
    if letters:
        await store.add_dead_letters("s", letters)
    config = SimpleNamespace(meters=METERS, granularity="hour" if hourly else "request")
    runner = SimpleNamespace(name="s", config=config)
    waiting = [e for p, e in positions if p > cursor]
    for month, lo, hi in ((JUNE, JUNE_1, JULY_1), (JULY, JULY_1, AUGUST_1)):
        got = await reconcile(store, [runner], month)  # type: ignore[arg-type]
        ledger, pend, gone = sums(entries, lo, hi), sums(waiting, lo, hi), sums(dead, lo, hi)
        rows = {(r["tenant"], r["meter"]): r for r in got["data"]}
        assert set(rows) == set(ledger) | set(pend) | set(gone)
        for slot, row in rows.items():
            total, wait, lost = ledger.get(slot, 0), pend.get(slot, 0), gone.get(slot, 0)
            m = slot[1]
            assert total - wait - lost >= 0
            assert (row["ledger"], row["pending"], row["dead"], row["delivered"]) == (
                render(m, total), render(m, wait), render(m, lost), render(m, total - wait - lost)
            )  # fmt: skip
            assert row["matched"] == (wait == lost == 0)
        assert got["matched"] == all(r["matched"] for r in rows.values())


DRAWN = {"entries": drawn_entries(), "cut": st.integers(0, 10),
         "dead_pick": st.lists(st.booleans(), max_size=10), "hourly": st.booleans()}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(**DRAWN)
def test_every_month_adds_up_with_requests_crossing_months(
    entries: list[LedgerEntry], cut: int, dead_pick: list[bool], hourly: bool
) -> None:
    async def run() -> None:
        store = MemoryStore()
        await store.open()
        try:
            billed = sum(1 for e in entries if e.status != "unsettled")
            await check_months(store, entries, min(cut, billed), dead_pick, hourly)
        finally:
            await store.close()

    asyncio.run(run())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**DRAWN)
def test_every_month_adds_up_on_sqlite(
    entries: list[LedgerEntry], cut: int, dead_pick: list[bool], hourly: bool
) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(Path(tmp) / "p.db")
            await store.open()
            try:
                billed = sum(1 for e in entries if e.status != "unsettled")
                await check_months(store, entries, min(cut, billed), dead_pick, hourly)
            finally:
                await store.close()

    asyncio.run(run())
