"""Settling reservations behind the ledger commit, off the request's path.

With PostgreSQL and Redis, a request is done once its ledger entry is committed: what the
client is told is what the ledger says (issue 7), and the Redis settle that follows changes
nothing it could be told. So ``ScaledStore`` hands the committed entries to a ``Settler``
and answers at once; one background task settles whatever has queued up meanwhile in one
call (many requests' entries in one script), so it also costs Redis fewer round trips.

- Never lost, never counted twice: the settle is idempotent, and a settle that fails, or
  that never runs because the process died, leaves the hold to lease reclaim, which finds
  the committed entry and settles from it (``ScaledStore.reclaim_expired``).
- Reads that must see settled spend (``ScaledStore.budget_states``) wait for the settles
  queued before them (``flush``), so a client reading after its answer sees its spend.
- A reserve does not wait: a hold whose settle is queued counts its reserved amount, as
  every reserve saw while its request ran, a round trip longer. The reservation is sized
  for the request's most, so this only makes the next admission more conservative (never
  an overspend the inline settle would have prevented). And a reserve refused by a slot
  in flight or a token limit while settles are queued is tried once more after they land
  (``ScaledStore.reserve``), so a finished request's slot never refuses the next request
  of a client that waited for its answer.
- Bounded: beyond ``max_pending`` entries the caller settles its own (``submit`` says no),
  which slows the requests that overload it rather than growing without end.
- Started by the store's ``open``, ended by its ``close``: everything queued is settled
  first (unless Redis is unreachable then: the rest is left to reclaim, and logged), so a
  clean shutdown leaves no reservation held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from farebox.core.records import LedgerEntry

log = logging.getLogger("farebox.stores.scaled")
MAX_PENDING = 10_000  # entries queued at most; beyond, the caller settles its own
BATCH_MAX = 128  # entries per settle call (one script: Redis runs nothing else meanwhile)
FLUSH_WAIT_S = 2.0  # how long a read waits at most for the settles queued before it

SettleFn = Callable[[Sequence[LedgerEntry]], Awaitable[None]]


def settle_failed(entries: Sequence[LedgerEntry], exc: BaseException) -> None:
    """Log a settle that failed after the commit (lease reclaim settles from the ledger)."""
    shown = ", ".join(e.request_id for e in entries[:5]) + ("..." if len(entries) > 5 else "")
    log.warning(
        "ledger entries %s committed; their Redis settle failed (%s: %s) and is left "
        "to lease reclaim",
        shown,
        type(exc).__name__,
        exc,
    )


class Settler:
    def __init__(
        self,
        settle: SettleFn,
        unreachable: tuple[type[BaseException], ...],
        *,
        max_pending: int = MAX_PENDING,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self._settle = settle
        self._unreachable = unreachable  # errors that mean Redis did not answer
        self._max_pending = max_pending
        self._batch_max = batch_max
        self._pending: list[LedgerEntry] = []
        self._submitted = 0  # entries accepted so far
        self._done = 0  # entries whose settle was attempted (settled, or left to reclaim)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def pending(self) -> bool:
        """Whether entries submitted are not settled (nor left to reclaim) yet."""
        return self._done < self._submitted

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="settler")
            self._task.add_done_callback(lambda _: self._release_waiters())

    def submit(self, entries: Sequence[LedgerEntry]) -> bool:
        """Queue committed entries for settling; False (nothing queued) when not running
        or full, and the caller settles them itself."""
        if not self.running or len(self._pending) + len(entries) > self._max_pending:
            return False
        if entries:
            self._pending.extend(entries)
            self._submitted += len(entries)
            self._wake.set()
        return True

    async def flush(self, within: float = FLUSH_WAIT_S) -> None:
        """Wait until every entry submitted before this call has been settled (or failed
        and been left to reclaim), ``within`` seconds at most: while Redis stalls, a read
        goes ahead then (and meets the stall itself) rather than queueing behind it."""
        target = self._submitted
        if self._done >= target or self._task is None or self._task.done():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await future

    async def stop(self) -> None:
        """Settle everything queued, then end the task; waiters are released either way."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                await task  # cancelling ``stop`` cancels it too
        finally:
            if self._pending:
                settle_failed(self._pending, RuntimeError("the store closed first"))
                self._pending = []
            self._release_waiters()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._batch_max]
                del self._pending[: self._batch_max]
                answered = await self._settle_batch(batch)
                self._done += len(batch)
                if not answered and self._closing:  # Redis is gone: do not wait out each
                    settle_failed(self._pending, RuntimeError("Redis unreachable at close"))
                    self._done += len(self._pending)
                    self._pending = []
                self._wake_waiters()
            if self._closing:
                return

    async def _settle_batch(self, batch: list[LedgerEntry]) -> bool:
        """Settle ``batch``; False if Redis did not answer. A batch refused for another
        reason (one entry overflowing a counter, a read-only replica) is retried entry by
        entry, so one entry's failure leaves only its own hold to reclaim."""
        try:
            await self._settle(batch)
            return True
        except self._unreachable as exc:
            settle_failed(batch, exc)
            return False
        except Exception as exc:
            if len(batch) == 1:
                settle_failed(batch, exc)
                return True
        for i, entry in enumerate(batch):
            if not await self._settle_batch([entry]):
                if batch[i + 1 :]:
                    settle_failed(batch[i + 1 :], RuntimeError("Redis stopped answering"))
                return False
        return True

    def _wake_waiters(self) -> None:
        keep = []
        for target, future in self._waiters:
            if target > self._done:
                keep.append((target, future))
            elif not future.done():
                future.set_result(None)
        self._waiters = keep

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_result(None)
