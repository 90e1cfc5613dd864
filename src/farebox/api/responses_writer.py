"""Writing stored Responses answers in batches, as the ledger writer writes entries: an
answer is queued with the bytes that were sent, and the queue is written in one store write
(``ResponseStore.put_many``: one transaction for the batch where the store has them).

The queue is written at the next turn of the event loop (``wait_s`` 0: what an answer stored
before its reply uses, so the answers of one turn share a transaction), or ``wait_s`` after
its first answer (an answer stored beside its reply: at one request at a time, the answers of
those milliseconds share one write instead of paying a transaction each), or at once when
``BATCH_MAX`` answers wait. A read of an answer still queued writes the queue at once and waits
for it (read your writes). Parsing an answer's bytes is the write's work too, off the reply.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from farebox.core.records import StoredResponse
from farebox.providers.translate_responses_history import split_response
from farebox.stores.base import ResponseStore

log = logging.getLogger("farebox.responses")
JSON = dict[str, Any]
BATCH_MAX = 64  # answers written in one batch at most
FINAL_EVENTS = (b"event: response.completed\n", b"event: response.incomplete\n")


@dataclass(slots=True)
class Queued:
    """An answer to store: the bytes sent (a Responses object, or a stream's final events),
    whose tenant, the whole input it answered, and when."""

    response_id: str
    sent: bytes
    tenant_id: str
    items: list[JSON]
    at: float


class ResponseWriter:
    """Batches of stored answers for one ``ResponseStore``; ``stop`` writes what is queued."""

    def __init__(self, store: ResponseStore, ttl_s: float, wait_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._wait_s = wait_s
        self._queue: list[Queued] = []
        self._batch: asyncio.Future[None] | None = None  # resolved once the queue is written
        self._pending: dict[str, asyncio.Future[None]] = {}  # queued or being written
        self._timer: asyncio.Handle | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def submit(
        self, response_id: str, sent: bytes, tenant_id: str, items: list[JSON], at: float
    ) -> asyncio.Future[None]:
        """Queue an answer; the future (its batch's) resolves once it is written (or failed:
        logged)."""
        done = self._batch
        if done is None:  # the first of a batch: one future, one timer for all of it
            loop = asyncio.get_running_loop()
            done = self._batch = loop.create_future()
            wait = self._wait_s
            self._timer = loop.call_later(wait, self.flush) if wait else loop.call_soon(self.flush)
        self._queue.append(Queued(response_id, sent, tenant_id, items, at))
        self._pending[response_id] = done
        if len(self._queue) >= BATCH_MAX:
            self.flush()
        return done

    def pending(self, response_id: str) -> asyncio.Future[None] | None:
        """The write of an answer not yet written, started now if it was only queued."""
        done = self._pending.get(response_id)
        if done is not None and done is self._batch:
            self.flush()
        return done

    def flush(self) -> None:
        """Write what is queued, in a task of its own."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, done = self._queue, self._batch
        self._queue, self._batch = [], None
        if done is not None:
            task = asyncio.get_running_loop().create_task(self._write(batch, done))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def stop(self) -> None:
        self.flush()
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def _write(self, batch: list[Queued], done: asyncio.Future[None]) -> None:
        try:
            stored = [s for s in map(self._stored, batch) if s is not None]
            if len(stored) == 1:
                await self._put_one(stored[0])
            elif stored:
                try:
                    await self._store.put_many(stored)
                except Exception:  # one transaction: each answer on its own, so one bad
                    log.warning("a batch of %d responses failed; storing each", len(stored))
                    for one in stored:  # answer or a timeout does not lose the others
                        await self._put_one(one)
        finally:
            for queued in batch:
                if self._pending.get(queued.response_id) is done:
                    del self._pending[queued.response_id]
            if not done.done():  # (a waiter that awaited it unshielded may have cancelled it)
                done.set_result(None)

    async def _put_one(self, stored: StoredResponse) -> None:
        try:
            await self._store.put(stored)
        except Exception:
            log.exception("response %s could not be stored; it cannot be continued", stored.id)

    def _stored(self, queued: Queued) -> StoredResponse | None:
        """The answer to keep, parsed from what was sent (None: nothing to keep)."""
        sent = queued.sent
        try:
            response = final_response(sent) if sent.startswith(b"event: ") else orjson.loads(sent)
            if response is None:
                return None
            output, usage, details = split_response(response)
            # the time the client was shown (the reply's ``created_at``: it may lie a second
            # before the queueing), so a retrieve answers what the create did
            sent_at = response.get("created_at")
            created = float(sent_at) if isinstance(sent_at, int | float) else queued.at
            return StoredResponse(
                str(response["id"]), queued.tenant_id, str(response.get("model") or ""),
                queued.items, output, usage, created, queued.at + self._ttl_s, details,
            )  # fmt: skip
        except Exception:  # the others of its batch are still kept
            log.exception("response %s could not be read to be stored", queued.response_id)
            return None


def final_response(chunk: bytes) -> JSON | None:
    """The Responses object of the ``response.completed`` (or ``incomplete``) frame."""
    for frame in chunk.split(b"\n\n"):
        if frame.startswith(FINAL_EVENTS):
            data = frame.partition(b"\ndata: ")[2]
            response = orjson.loads(data).get("response")
            return response if isinstance(response, dict) else None
    return None
