"""Issue [10]: stored Responses answers are written in batches (``api.responses_writer``), so
that keeping an answer costs a share of a transaction rather than one each.

- Answers stored beside their reply wait ``wait_s`` for others: those of that while share one
  ``put_many``; answers stored before their reply (``wait_s`` 0) share one per loop turn.
- ``BATCH_MAX`` answers are written without waiting; a read of a queued answer writes the
  queue at once (read your writes); ``stop`` writes what is queued.
- A batch that cannot be written is logged, and its answers' waiters are released.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from farebox.api.responses_writer import BATCH_MAX, ResponseWriter
from farebox.core.records import StoredResponse
from farebox.stores.memory.responses import MemoryResponses

LONG_S = 3600.0  # a wait no test sits out: something else must write the queue
T = 1_000.0


class Recording(MemoryResponses):
    """Memory responses that remember each write's batch (``fail``: refuse them, or with
    ``fail_many`` only those of several answers; ``gate``: hold each write until it is set)."""

    def __init__(
        self, fail: bool = False, gate: asyncio.Event | None = None, fail_many: bool = False
    ) -> None:
        super().__init__()
        self.writes: list[list[str]] = []
        self.fail = fail
        self.fail_many = fail_many
        self.gate = gate

    async def put(self, stored: StoredResponse) -> None:
        await self.put_many([stored])

    async def put_many(self, stored: Sequence[StoredResponse]) -> None:
        self.writes.append([s.id for s in stored])
        if self.gate is not None:
            await self.gate.wait()
        if self.fail or (self.fail_many and len(stored) > 1):
            raise OSError("disk full")
        for one in stored:
            await super().put(one)


def sent(response_id: str) -> bytes:
    return orjson.dumps({"id": response_id, "object": "response", "model": "m",
                         "output": [], "usage": {}})  # fmt: skip


def submit(writer: ResponseWriter, *ids: str) -> list[asyncio.Future[None]]:
    return [writer.submit(i, sent(i), "acme", [], T) for i in ids]


async def test_answers_beside_their_replies_share_a_write() -> None:
    store = Recording()
    writer = ResponseWriter(store, 60.0, wait_s=0.005)
    await asyncio.gather(*submit(writer, "resp_1", "resp_2", "resp_3"))
    assert store.writes == [["resp_1", "resp_2", "resp_3"]]
    assert (await store.get("acme", "resp_2", T)) is not None


async def test_answers_before_their_replies_share_a_loop_turn() -> None:
    store = Recording()
    writer = ResponseWriter(store, 60.0, wait_s=0.0)
    await asyncio.gather(*submit(writer, "resp_1", "resp_2"))
    await asyncio.gather(*submit(writer, "resp_3"))
    assert store.writes == [["resp_1", "resp_2"], ["resp_3"]]


async def test_a_full_batch_is_written_without_waiting() -> None:
    store = Recording()
    writer = ResponseWriter(store, 60.0, wait_s=LONG_S)
    ids = [f"resp_{i}" for i in range(BATCH_MAX + 1)]
    done = submit(writer, *ids)
    await asyncio.wait_for(asyncio.gather(*done[:BATCH_MAX]), 5)
    assert store.writes == [ids[:BATCH_MAX]]
    assert not done[-1].done()  # the next batch waits
    await writer.stop()
    assert store.writes[-1] == ids[BATCH_MAX:]


async def test_a_read_of_a_queued_answer_writes_the_queue_at_once() -> None:
    store = Recording()
    writer = ResponseWriter(store, 60.0, wait_s=LONG_S)
    submit(writer, "resp_1", "resp_2")
    pending = writer.pending("resp_2")
    assert pending is not None
    await asyncio.wait_for(pending, 5)
    assert store.writes == [["resp_1", "resp_2"]]
    assert writer.pending("resp_2") is None  # written: nothing to wait for


async def test_stop_writes_what_is_queued() -> None:
    store = Recording()
    writer = ResponseWriter(store, 60.0, wait_s=LONG_S)
    done = submit(writer, "resp_1")
    await writer.stop()
    assert done[0].done() and store.writes == [["resp_1"]]


async def test_a_batch_that_fails_is_logged_and_lets_its_waiters_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Recording(fail=True)
    writer = ResponseWriter(store, 60.0, wait_s=0.0)
    done = submit(writer, "resp_1", "resp_2")
    bad = writer.submit("resp_3", b"not json", "acme", [], T)  # unreadable: left out
    await asyncio.wait_for(asyncio.gather(*done, bad), 5)
    # the batch, then each answer on its own
    assert store.writes == [["resp_1", "resp_2"], ["resp_1"], ["resp_2"]]
    assert "resp_1 could not be stored" in caplog.text
    assert "resp_2 could not be stored" in caplog.text
    assert "resp_3 could not be read" in caplog.text


async def test_a_failed_batch_keeps_the_answers_that_can_be_written() -> None:
    """One transaction for a batch: when it fails (a timeout, a lock, one bad answer), each
    answer is written on its own, so the others are not lost with it."""
    store = Recording(fail_many=True)
    writer = ResponseWriter(store, 60.0, wait_s=0.0)
    await asyncio.wait_for(asyncio.gather(*submit(writer, "resp_1", "resp_2")), 5)
    assert store.writes == [["resp_1", "resp_2"], ["resp_1"], ["resp_2"]]
    for rid in ("resp_1", "resp_2"):
        assert await store.get("acme", rid, T) is not None


async def test_stored_answers_keep_their_tenant_and_expiry() -> None:
    store = Recording()
    writer = ResponseWriter(store, 60.0, wait_s=0.0)
    await writer.submit("resp_1", sent("resp_1"), "globex", [{"role": "user"}], T)
    found: Any = await store.get("globex", "resp_1", T)
    assert (found.tenant_id, found.expires_at, found.input) == ("globex", T + 60.0, [
        {"role": "user"}])  # fmt: skip
    assert await store.get("acme", "resp_1", T) is None
