"""Group-commit ledger writer.

Each request awaits its own entry's durability, but many entries share one transaction:
while a batch is being written, the next one accumulates. A request served alone (no other
in flight, nothing queued) commits on its own task when the store can do that at once, which
saves the two hops through the writer task.

The writer also knows whether the ledger's database is reachable (``ensure_available``), so
a request is refused with 503 ``ledger_unavailable`` before its upstream call rather than
served unrecorded. A store that tracks this itself (PostgreSQL: any connection-level failure
on any path, and a probe every ``timeouts.ledger_probe_s``) hands its flag over; otherwise
(SQLite) the writer keeps one, flipped down when a write fails for want of its disk or
database and up by a probe every ``PROBE_DOWN_S`` while down.

A request whose write fails after its upstream call (it was admitted just before the
outage) is answered 503 ``ledger_unavailable``, saying the charge cannot be confirmed (a
COMMIT whose answer was lost may have landed). Its entry is not written again later. Its hold
is not released: the lease expires and the reclaim path settles it from the ledger if the
entry landed, or records it as ``unsettled`` with the amount that was reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

from farebox.core.records import LedgerEntry
from farebox.errors import LedgerUnavailable
from farebox.gateway.inflight import InFlight
from farebox.stores.base import LedgerStore
from farebox.stores.health import Health, Prober, ProbeTimes

log = logging.getLogger("farebox.ledger")  # the name operators filter on
WRITE_ATTEMPTS = 4
RETRY_DELAY_S = 0.05
PROBE_DOWN_S = 0.5  # while the ledger's database is down, how often it is probed
REFUSED = (
    "The gateway cannot reach its ledger database, so it could not record this request's "
    "usage; the request was refused before any upstream call and was not billed. "
    "Retry shortly."
)
UNRECORDED = (
    "The gateway lost its ledger database while recording this request and cannot confirm "
    "the charge: if its entry was committed before the loss it is billed at its real cost, "
    "otherwise the ledger keeps it as unsettled and it is not billed. Look up the request id "
    "before retrying."
)


class LedgerWriter:
    def __init__(
        self, store: LedgerStore, *, batch_max: int = 512, in_flight: InFlight | None = None
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
        self._prober: Prober | None = None
        kept = store.ledger_health
        if kept is not None:
            self._health = kept  # the store probes it itself
        else:
            self._health = Health("the ledger database")
            times = ProbeTimes(down_every=PROBE_DOWN_S, up_every=None, timeout=1.0)
            # a write, where the store has a disk: a read succeeds on a full one
            self._prober = Prober(self._health, store.probe_write, times)

    def start(self) -> None:
        self._closing = False
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")
        if self._prober is not None:
            self._prober.start()

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
        if self._prober is not None:
            await self._prober.stop()

    @property
    def available(self) -> bool:
        """False while the ledger's database is known to be unreachable."""
        return self._health.up

    def ensure_available(self) -> None:
        """Raise ``LedgerUnavailable`` when the ledger's database is known to be unreachable,
        so a request is refused before any upstream call. O(1): reads a health flag."""
        if not self._health.up:
            raise LedgerUnavailable(REFUSED, headers={"Retry-After": "1"})

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
        fails only its own request. Each write is retried with backoff, unless the database
        is unreachable: then every entry fails at once (``LedgerUnavailable``)."""
        if len(batch) > 1:
            try:
                await self._store.append_ledger([entry for entry, _ in batch])
            except Exception as exc:
                if self._unreachable(exc):
                    log.error("ledger batch of %d not written: %s", len(batch), exc)
                    _resolve(batch, _unrecorded(exc))
                    return
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
                if self._unreachable(exc):
                    _resolve(batch, _unrecorded(exc))
                    return
                if attempt + 1 == WRITE_ATTEMPTS:
                    _resolve(batch, exc)
                    return
                await asyncio.sleep(RETRY_DELAY_S * 2**attempt)
        _resolve(batch, None)

    def _unreachable(self, exc: Exception) -> bool:
        """The write failed because the database cannot be reached (its store says so, or,
        for a store that does not track it, the error is the disk's or the connection's)."""
        if self._prober is not None and _unavailable_error(exc):
            self._health.down(f"{type(exc).__name__}: {exc}")
        return not self._health.up


def _unavailable_error(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(
        word in message for word in ("disk", "full", "readonly", "unable to open")
    )


def _unrecorded(exc: Exception) -> LedgerUnavailable:
    # not retried by the SDKs: a retry could be served and billed a second time
    error = LedgerUnavailable(UNRECORDED, headers={"x-should-retry": "false"})
    error.__cause__ = exc
    return error


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
