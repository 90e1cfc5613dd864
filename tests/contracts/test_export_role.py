"""The ``ExportStore`` contract, on every backend: the billing outbox, cursors and dead
letters; and PostgreSQL's outbox positions committed out of order."""

from __future__ import annotations

from typing import Any

from tests.contracts.backends import EVERY
from tests.contracts.builders import entry

BACKENDS = EVERY


async def test_outbox_cursor_and_dead_letters(store: Any) -> None:
    entries = [entry(f"r{i}", tenant_id="acme", cost=i) for i in range(5)]
    entries.append(entry("held", tenant_id="acme", status="unsettled"))  # not billable yet
    await store.append_ledger(entries[:3])
    await store.append_ledger(entries[3:])
    rows = await store.ledger_since(0, 100)
    assert [e.request_id for _, e in rows] == ["r0", "r1", "r2", "r3", "r4"]
    positions = [p for p, _ in rows]
    assert positions == sorted(positions) and len(set(positions)) == 5
    assert [e.request_id for _, e in await store.ledger_since(positions[1], 2)] == ["r2", "r3"]
    assert await store.export_cursor("s") == 0
    await store.set_export_cursor("s", positions[2])
    await store.set_export_cursor("s", positions[0])  # never back
    assert await store.export_cursor("s") == positions[2]
    await store.append_ledger([entry("late", tenant_id="acme", cost=9)])
    tail = await store.ledger_since(positions[-1], 10)
    assert [(e.request_id, e.cost) for _, e in tail] == [("late", 9)]
    letter = {"key": "k1", "event": {"value": "1.5", "meter": "cost_usd"}, "reason": "no id",
              "at": 1.0}  # fmt: skip
    await store.add_dead_letters("s", [letter, {**letter, "key": "k2", "at": 2.0}])
    await store.add_dead_letters("t", [letter])
    assert await store.dead_letter_count("s") == 2
    assert await store.dead_letter_count("t") == 1
    assert await store.dead_letter_count("none") == 0
    assert await store.dead_letter_count() == 3
    found = await store.dead_letters("s")
    assert [(d["key"], d["event"]["value"], d["reason"]) for d in found] == [
        ("k1", "1.5", "no id"), ("k2", "1.5", "no id"),
    ]  # fmt: skip
    await store.remove_dead_letters("s", ["k1"])
    left = sorted((d["sink"], d["key"]) for d in await store.dead_letters())
    assert left == [("s", "k2"), ("t", "k1")]
    assert await store.dead_letter_count() == 2


async def test_dead_letters_since_an_event_time(store: Any) -> None:
    def letter(key: str, ts: int) -> dict[str, Any]:
        return {"key": key, "reason": "r", "at": float(ts),
                "event": {"value": "1", "meter": "requests", "timestamp": ts}}  # fmt: skip

    await store.add_dead_letters("s", [letter("old", 99), letter("edge", 100), letter("new", 5000)])
    await store.add_dead_letters("t", [letter("other", 200)])
    assert [d["key"] for d in await store.dead_letters("s", since=100)] == ["edge", "new"]
    assert [d["key"] for d in await store.dead_letters(since=101)] == ["other", "new"]
    assert len(await store.dead_letters("s")) == 3
    assert await store.claim_exporter()


async def test_postgres_waits_for_positions_committed_out_of_order(
    store: Any,
    monkeypatch: Any,
) -> None:
    from farebox.stores.postgres import store as postgres
    from farebox.stores.scaled import ScaledStore

    if not isinstance(store, ScaledStore):
        return  # SQLite has one writer at a time: its positions arrive in order
    pg = store._pg
    await store.append_ledger([entry("a", tenant_id="acme")])
    async with pg._pool.acquire() as slow:
        tx = slow.transaction()
        await tx.start()  # a write that took its position and has not committed yet
        await slow.execute("INSERT INTO outbox(request_id) VALUES ('b')")
        await slow.execute(
            "INSERT INTO ledger(request_id, tenant_id, key_id, endpoint, model_requested, "
            "model_served, provider, status, http_status, started_at, finished_at) "
            "VALUES ('b', 'acme', 'k', 'chat', 'm', 'm', 'p', 'ok', 200, 1, 1)"
        )
        await store.append_ledger([entry("c", tenant_id="acme")])  # commits first
        seen = [e.request_id for _, e in await store.ledger_since(0, 10)]
        assert seen == ["a"]  # "c" waits behind the hole "b" leaves
        await tx.commit()
    assert [e.request_id for _, e in await store.ledger_since(0, 10)] == ["a", "b", "c"]
    # a position that never commits (a rolled-back write) is passed once it is old
    await pg._pool.execute("SELECT nextval(pg_get_serial_sequence('outbox', 'seq'))")
    await store.append_ledger([entry("d", tenant_id="acme")])
    last = (await store.ledger_since(0, 10))[-1][0]
    assert [e.request_id for _, e in await store.ledger_since(last, 10)] == []
    monkeypatch.setattr(postgres, "GAP_WAIT_S", 0.0)
    assert [e.request_id for _, e in await store.ledger_since(last, 10)] == ["d"]


async def test_entries_by_id_reads_the_named_entries(store: Any) -> None:
    await store.append_ledger([entry(f"r{i}", tenant_id="acme", cost=i) for i in range(3)])
    found = await store.entries_by_id(["r2", "r0", "missing", "r2"])
    assert {rid: e.cost for rid, e in found.items()} == {"r2": 2, "r0": 0}
    assert await store.entries_by_id([]) == {}
