"""Group-commit ledger writer.

Each request awaits its own entry's durability, but many entries share one transaction:
while a batch is being written, the next one accumulates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from farebox.core.records import LedgerEntry
from farebox.stores.base import Store

log = logging.getLogger("farebox.ledger")
WRITE_ATTEMPTS = 4
RETRY_DELAY_S = 0.05


class LedgerWriter:
    def __init__(self, store: Store, *, batch_max: int = 512) -> None:
        self._store = store
        self._batch_max = batch_max
        self._pending: list[tuple[LedgerEntry, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight: list[asyncio.Future[None]] = []

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

    def submit(self, entry: LedgerEntry) -> asyncio.Future[None]:
        """Queue an entry; the future resolves once it is durable. Never blocks."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        self._wake.set()
        return future

    async def append(self, entry: LedgerEntry) -> None:
        """Queue an entry and wait until it is durable."""
        await asyncio.shield(self.submit(entry))

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
        entries = [entry for entry, _ in batch]
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await self._store.append_ledger(entries)  # idempotent on request_id
                break
            except Exception as exc:
                log.error(
                    "ledger write of %d entries failed (try %d): %s", len(batch), attempt + 1, exc
                )
                if attempt + 1 == WRITE_ATTEMPTS:  # every waiter learns it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    return
                await asyncio.sleep(RETRY_DELAY_S * 2**attempt)
        for _, future in batch:
            if not future.done():
                future.set_result(None)
