"""Issue [11]: reconciliation reads the rollups for the ledger's totals, the outbox only after
each sink's cursor for what waits, and the dead letters for what is dead; it never pages
through the whole outbox. Its answer still adds up: ledger = delivered + dead + pending."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from farebox.billing.reconcile import reconcile
from farebox.core.meters import BILLED, raw_value, render
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
