"""Embedding off the event loop, behind a bounded queue.

``EmbedQueue`` hands each text to one of ``threads`` worker threads. At most ``queue`` texts
wait for a thread; when that many already wait, ``embed()`` answers ``None`` at once (the cache
stage treats it as a miss) and counts the skip, so a burst of traffic never waits on the
embedder and never makes latency explode. A failed embedding is also ``None`` (counted in
``failed``, logged without the text). ``close()`` answers every waiting text with ``None``, lets
the running ones finish and joins the threads: every future it created is resolved.
"""

from __future__ import annotations

import asyncio
import logging
import queue as stdqueue
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger("farebox.semantic")

Work = Callable[[str], bytes]
_Item = tuple[str, "Future[bytes | None]"] | None  # None tells a worker to stop


class EmbedQueue:
    """``work(text) -> bytes`` run by ``threads`` threads with at most ``queue`` texts waiting.

    ``skipped``: texts refused because the queue was full (or the queue closed);
    ``on_skip``: called (on the caller's thread) for each, e.g. to count a metric."""

    def __init__(
        self,
        work: Work,
        *,
        queue: int,
        threads: int,
        on_skip: Callable[[], None] | None = None,
        name: str = "farebox-embed",
    ) -> None:
        if queue < 1 or threads < 1:
            raise ValueError("queue and threads are at least 1")
        self.skipped = 0
        self.failed = 0
        self.on_skip = on_skip
        self._work = work
        self._limit = queue
        self._waiting = 0
        self._closed = False
        self._lock = threading.Lock()
        self._items: stdqueue.SimpleQueue[_Item] = stdqueue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        """Texts queued and not yet taken by a thread."""
        return self._waiting

    def submit(self, text: str) -> Future[bytes | None] | None:
        """Queue ``text``; ``None`` (and a counted skip) when the queue is full or closed."""
        future: Future[bytes | None] = Future()
        with self._lock:
            admitted = not self._closed and self._waiting < self._limit
            if admitted:
                self._waiting += 1
                self._items.put((text, future))
            else:
                self.skipped += 1
        if admitted:
            return future
        if self.on_skip is not None:
            self.on_skip()
        return None

    async def embed(self, text: str) -> bytes | None:
        """The embedding of ``text``, or ``None`` at once when the queue is full. Cancelling
        the caller drops a text that is still waiting."""
        future = self.submit(text)
        if future is None:
            return None
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        """Answer the waiting texts with ``None``, finish the running ones, join the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            drained = self._drain()
            for _ in self._threads:
                self._items.put(None)
        for future in drained:
            if future.set_running_or_notify_cancel():
                future.set_result(None)
        await asyncio.to_thread(self._join)

    def _drain(self) -> list[Future[bytes | None]]:
        futures: list[Future[bytes | None]] = []
        while True:
            try:
                item = self._items.get_nowait()
            except stdqueue.Empty:
                return futures
            if item is not None:
                self._waiting -= 1
                futures.append(item[1])

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _take(self) -> _Item:
        item = self._items.get()
        if item is not None:
            with self._lock:
                self._waiting -= 1
        return item

    def _run(self) -> None:
        while (item := self._take()) is not None:
            text, future = item
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up while it waited
            try:
                result = self._work(text)
            except Exception as exc:  # a failed embedding is a miss, never an error
                with self._lock:
                    self.failed += 1
                log.warning("embedding failed: %s", type(exc).__name__)
                future.set_result(None)
            else:
                future.set_result(result)
