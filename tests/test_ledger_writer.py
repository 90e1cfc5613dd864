"""The group-commit writer: one bad entry fails only its own request; late entries after
stop are still written."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from farebox.core.records import LedgerEntry
from farebox.ledger import LedgerWriter
from farebox.stores.memory import MemoryStore


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
    monkeypatch.setattr("farebox.ledger.RETRY_DELAY_S", 0.0)
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
    writer = LedgerWriter(store)
    writer.start()
    await writer.append(entry("before"))
    await writer.stop()
    await writer.submit(entry("late"))
    assert [e.request_id for e in await store.ledger()] == ["before", "late"]
