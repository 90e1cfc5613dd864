"""The group-commit writer: one bad entry fails only its own request; late entries after
stop are still written; a request served alone commits its own entry at once, and under load
entries share transactions."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from farebox.core.records import LedgerEntry
from farebox.gateway.ledger import InFlight, LedgerWriter
from farebox.stores.memory.store import MemoryStore
from farebox.stores.sqlite.single import SingleProcessSQLiteStore
from farebox.stores.sqlite.store import CHECKPOINT_EVERY, SQLiteStore
from tests.contracts.builders import hold, reservation, settlement, state


def entry(request_id: str) -> LedgerEntry:
    return LedgerEntry(
        request_id=request_id, tenant_id="t", key_id="k", endpoint="chat.completions",
        model_requested="m", model_served="m", provider="p", status="ok", http_status=200,
        started_at=1.0, finished_at=2.0, cost=5,
    )  # fmt: skip


class PickyStore(MemoryStore):
    """Refuses any batch that contains a poisoned entry, like a database refusing a row."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        self.batches.append(len(entries))
        if any(e.request_id.startswith("poison") for e in entries):
            raise ValueError("cannot encode this row")
        await super().append_ledger(entries)


async def test_one_bad_entry_fails_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("farebox.gateway.ledger.RETRY_DELAY_S", 0.0)
    store = PickyStore()
    writer = LedgerWriter(store)
    futures = [writer.submit(entry(f"good{i}")) for i in range(10)]
    futures.insert(5, writer.submit(entry("poison")))
    writer.start()
    results = await asyncio.gather(*futures, return_exceptions=True)
    await writer.stop()
    failed = [r for r in results if isinstance(r, Exception)]
    assert len(failed) == 1 and "cannot encode" in str(failed[0])
    assert sorted(e.request_id for e in await store.ledger()) == sorted(
        f"good{i}" for i in range(10)
    )
    assert store.batches[0] == 11  # tried as one group commit first


async def test_entries_submitted_after_stop_are_written() -> None:
    store = MemoryStore()
    writer = started(store)
    await writer.append(entry("before"))
    await writer.stop()
    await writer.submit(entry("late"))
    assert [e.request_id for e in await store.ledger()] == ["before", "late"]


class CountingStore(MemoryStore):
    """Counts the two ways an entry can reach the store; ``now`` says what the write at
    once does: ``"write"``, ``"refuse"`` (returns False) or ``"fail"`` (raises)."""

    def __init__(self, now: str = "write") -> None:
        super().__init__()
        self.now = now
        self.at_once: list[int] = []
        self.batches: list[int] = []

    def append_ledger_now(self, entries: Sequence[LedgerEntry]) -> bool:
        self.at_once.append(len(entries))
        if self.now == "fail":
            raise sqlite3.OperationalError("disk I/O error")
        return self.now == "write" and super().append_ledger_now(entries)

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        self.batches.append(len(entries))
        await super().append_ledger(entries)


async def written(store: MemoryStore) -> list[str]:
    return sorted(e.request_id for e in await store.ledger())


def started(store: Any, in_flight: int | None = None) -> LedgerWriter:
    """A running writer; its data plane serves ``in_flight`` requests (no counter: None)."""
    counter = None
    if in_flight is not None:
        counter = InFlight()
        counter.count = in_flight
    writer = LedgerWriter(store, in_flight=counter)
    writer.start()
    return writer


async def test_a_request_alone_commits_its_entry_at_once() -> None:
    store = CountingStore()
    writer = started(store, in_flight=1)
    for i in range(3):
        await writer.append(entry(f"r{i}"))
    await writer.stop()
    assert (store.at_once, store.batches) == ([1, 1, 1], [])
    assert await written(store) == ["r0", "r1", "r2"]


async def test_under_load_entries_share_transactions() -> None:
    store = CountingStore()
    writer = started(store, in_flight=64)
    await asyncio.gather(*(writer.append(entry(f"r{i:02}")) for i in range(64)))
    await writer.stop()
    assert store.at_once == []
    assert sum(store.batches) == 64 and len(store.batches) <= 2  # group commit
    assert await written(store) == [f"r{i:02}" for i in range(64)]


async def test_without_a_counter_every_entry_is_queued() -> None:
    store = CountingStore()
    writer = started(store)
    await writer.append(entry("r"))
    await writer.stop()
    assert (store.at_once, store.batches) == ([], [1])


@pytest.mark.parametrize("now", ["refuse", "fail"])
async def test_a_write_at_once_that_cannot_be_made_is_queued(
    now: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("farebox.gateway.ledger.RETRY_DELAY_S", 0.0)
    store = CountingStore(now)
    writer = started(store, in_flight=1)
    await writer.append(entry("r"))
    await writer.stop()
    assert (store.at_once, store.batches) == ([1], [1])
    assert await written(store) == ["r"]


async def test_entries_queued_before_are_not_overtaken() -> None:
    """While queued entries wait for the writer, a request alone queues behind them."""
    store = CountingStore()
    writer = started(store, in_flight=1)
    early = writer.submit(entry("early"))  # a client that went away: queued, not awaited
    await writer.append(entry("alone"))
    await early
    await writer.stop()
    assert (store.at_once, store.batches) == ([], [2])


# --- the SQLite stores' write at once -------------------------------------------------------


def sqlite_store(kind: str, path: Path) -> Any:
    return SQLiteStore(path) if kind == "shared" else SingleProcessSQLiteStore(path)


@pytest.mark.parametrize("kind", ["shared", "single-process"])
async def test_sqlite_never_waits_for_another_process_s_write_lock(
    kind: str, tmp_path: Path
) -> None:
    path = tmp_path / "l.db"
    store = sqlite_store(kind, path)
    await store.open()
    a = hold("tenant:acme:day", 1_000)
    assert (await store.reserve(reservation("r1", 300, [a]))).ok
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        assert store.append_ledger_now([settlement("r1", 123)]) is False
        assert await state(store, a) == (0, 300, 1_000)  # nothing written, nothing settled
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.append_ledger_now([settlement("r1", 123)]) is True
    assert await state(store, a) == (123, 0, 1_000)
    await store.close()
    again = sqlite_store(kind, path)  # durable: committed before it returned
    await again.open()
    assert [(e.request_id, e.cost) for e in await again.ledger()] == [("req-r1", 123)]
    assert await state(again, a) == (123, 0, 1_000)
    await again.close()


@pytest.mark.parametrize("kind", ["shared", "single-process"])
async def test_requests_alone_keep_the_wal_bounded(kind: str, tmp_path: Path) -> None:
    """When a checkpoint is due, the write at once declines and the writer's queued write
    waits for it, with no ledger write meanwhile: the checkpoint completes and the WAL
    starts again from its beginning instead of growing without end."""
    path = tmp_path / "w.db"
    store = sqlite_store(kind, path)
    await store.open()
    writer = started(store, in_flight=1)
    wal = path.with_name(path.name + "-wal")
    sizes = []
    for block in range(6):
        for i in range(CHECKPOINT_EVERY):
            await writer.append(entry(f"r{block}-{i:03}"))
        sizes.append(wal.stat().st_size)
    await writer.stop()
    assert len(await store.ledger()) == 6 * CHECKPOINT_EVERY
    await store.close()
    assert max(sizes) <= 2 * sizes[0], sizes  # the high-water mark of one block, not six


async def test_a_failed_journal_compaction_after_a_commit_counts_spend_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction runs after the ledger commit; if it fails, the write still succeeded (a
    retry would count the spend twice) and the journal stays in use."""
    monkeypatch.setattr("farebox.stores.sqlite.single.COMPACT_AFTER_BYTES", 0)
    store = SingleProcessSQLiteStore(tmp_path / "s.db")
    await store.open()
    a = hold("tenant:acme:day", 1_000)
    real_replace = os.replace

    def broken(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("farebox.stores.sqlite.single.os.replace", broken)
    assert (await store.reserve(reservation("r1", 300, [a]))).ok
    assert (await store.reserve(reservation("r2", 200, [a]))).ok
    assert store.append_ledger_now([settlement("r1", 123)]) is True
    assert await state(store, a) == (123, 200, 1_000)
    monkeypatch.setattr("farebox.stores.sqlite.single.os.replace", real_replace)
    assert (await store.reserve(reservation("r3", 100, [a]))).ok  # the journal still works
    await store.append_ledger([settlement("r2", 50)])  # this time compaction succeeds
    await store.close()
    again = SingleProcessSQLiteStore(tmp_path / "s.db")  # r3 was journalled: it comes back
    await again.open()
    entries = {e.request_id: (e.status, e.cost) for e in await again.ledger()}
    assert entries.pop("req-r3")[0] == "unsettled"
    assert entries == {"req-r1": ("ok", 123), "req-r2": ("ok", 50)}
    assert await state(again, a) == (173, 0, 1_000)
    await again.close()
