"""The bounded embedding queue (farebox.semantic.queue) and the hosted embedder's bound: a full
queue skips at once, close() resolves everything, failures are misses. Synchronised with
events, never sleeps."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Sequence

import pytest

from farebox.semantic.hosted import HostedEmbedder, unit_vector_bytes
from farebox.semantic.queue import EmbedQueue


class Gate:
    """A work function that blocks each call until released, and says when it started."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.texts: list[str] = []

    def __call__(self, text: str) -> bytes:
        self.texts.append(text)
        self.started.release()
        assert self.release.wait(timeout=30)
        if text == "boom":
            raise RuntimeError("model failed")
        return text.encode()

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.acquire, True, 30)


async def test_a_full_queue_skips_at_once_and_counts_it() -> None:
    gate = Gate()
    skips: list[int] = []
    queue = EmbedQueue(gate, queue=1, threads=1, on_skip=lambda: skips.append(1))
    running = asyncio.create_task(queue.embed("a"))
    await gate.wait_started()  # "a" is on the thread
    waiting = asyncio.create_task(queue.embed("b"))
    await asyncio.sleep(0)  # let the task queue "b" (a yield, not a wait for time)
    assert queue.waiting == 1
    # the worker is blocked until `release` is set below: returning here proves no blocking
    assert await queue.embed("c") is None
    assert (queue.skipped, len(skips)) == (1, 1)
    gate.release.set()
    assert await running == b"a"
    assert await waiting == b"b"
    assert gate.texts == ["a", "b"]
    await queue.close()


async def test_close_answers_waiting_texts_and_finishes_running_ones() -> None:
    gate = Gate()
    queue = EmbedQueue(gate, queue=4, threads=1)
    running = asyncio.create_task(queue.embed("a"))
    await gate.wait_started()
    waiting = [asyncio.create_task(queue.embed(t)) for t in ("b", "c")]
    await asyncio.sleep(0)
    closing = asyncio.create_task(queue.close())
    await asyncio.sleep(0)
    gate.release.set()
    await closing
    assert await running == b"a"  # the running one finished
    assert [await w for w in waiting] == [None, None]  # the waiting ones answered None
    assert gate.texts == ["a"]
    assert await queue.embed("d") is None  # closed: a miss, counted
    assert queue.skipped == 1
    await queue.close()  # twice is fine


async def test_a_failed_embedding_is_a_miss() -> None:
    gate = Gate()
    gate.release.set()
    queue = EmbedQueue(gate, queue=2, threads=2)
    assert await queue.embed("boom") is None
    assert queue.failed == 1
    assert await queue.embed("ok") == b"ok"
    await queue.close()


async def test_a_cancelled_caller_drops_its_waiting_text() -> None:
    gate = Gate()
    queue = EmbedQueue(gate, queue=2, threads=1)
    running = asyncio.create_task(queue.embed("a"))
    await gate.wait_started()
    waiting = asyncio.create_task(queue.embed("b"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    after = asyncio.create_task(queue.embed("c"))
    gate.release.set()
    assert await running == b"a"
    assert await after == b"c"
    assert gate.texts == ["a", "c"]  # "b" never ran
    await queue.close()


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        EmbedQueue(lambda text: b"", queue=0, threads=1)


def floats(data: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(data) // 4}f", data)


def test_hosted_vectors_are_unit_float32_little_endian() -> None:
    data = unit_vector_bytes([3.0, 4.0])
    assert data is not None and len(data) == 8
    assert floats(data) == pytest.approx((0.6, 0.8))
    assert unit_vector_bytes([]) is None
    assert unit_vector_bytes([0.0, 0.0]) is None
    assert unit_vector_bytes([float("nan"), 1.0]) is None


async def test_hosted_embedder_bounds_calls_and_skips_when_full() -> None:
    release = asyncio.Event()
    calls: list[list[str]] = []

    async def embed_texts(texts: list[str]) -> Sequence[Sequence[float]]:
        calls.append(texts)
        await release.wait()
        if texts == ["boom"]:
            raise RuntimeError("upstream failed")
        return [[1.0, 0.0]]

    skips: list[int] = []
    embedder = HostedEmbedder(
        embed_texts, name="text-embedding-3-small", queue=1, concurrency=1,
        on_skip=lambda: skips.append(1),
    )  # fmt: skip
    await embedder.start()
    first = asyncio.create_task(embedder.embed("a"))
    second = asyncio.create_task(embedder.embed("boom"))
    await asyncio.sleep(0)
    assert calls == [["a"]]  # one call in flight, one waiting for the slot
    assert await embedder.embed("c") is None  # full: skipped at once
    assert (embedder.skipped, len(skips)) == (1, 1)
    release.set()
    assert floats(await first or b"") == (1.0, 0.0)
    assert await second is None  # a failed call is a miss
    assert embedder.failed == 1
    await embedder.close()
    assert await embedder.embed("d") is None
    assert embedder.skipped == 2
