"""The auth epoch of the scaled-out store, kept on each replica and fresh in the background, so
authentication makes no Redis command per request.

Redis holds the shared counter ``P:auth_epoch`` (``P`` is ``{prefix}``). A replica that
changes a tenant or a key bumps it (``INCR``), adopts the new value at once (it reads its own
writes) and announces it (``PUBLISH`` on the channel of the same name). Every replica keeps:

- a subscriber to that channel, which adopts announced values within milliseconds;
- a poll (``GET`` every ``poll_s``), which catches an announcement that was lost (a dropped
  subscriber connection, a bump whose replica died between ``INCR`` and ``PUBLISH``), and is
  what vouches for the local value: the value is trusted only while the last successful poll
  was sent less than ``bound_s`` ago.

The bound: a change whose bump has landed in Redis (before the admin call that made it
returns) is seen by every replica within ``bound_s`` (1 s), usually within milliseconds. A
read of the counter sent after the ``INCR`` reflects it, and a replica without a successful
read sent in the last ``bound_s`` does not trust its cache (``current()`` is ``None``).
``confirmed()`` then reads Redis once, on behalf of every request waiting (so a poll held up
by a busy event loop costs one round trip, not a refusal); if Redis does not answer, the
store refuses the request as for any Redis outage. A bump that fails (Redis down, or no
answer) leaves this replica distrusting its own cache until the bump is redone, which the
poll retries.

The local value is a counter of this replica's own (``current()``): it moves by one whenever
a larger Redis value is seen (late or repeated announcements are ignored: it never goes back)
and whenever trust returns after a lapse, so caches filled before an outage are dropped.

The watcher needs only ``get``, ``incr``, ``publish`` and ``pubsub`` (``EpochClient``):
``redis.asyncio.Redis`` and ``redis.asyncio.cluster.RedisCluster`` both have them (on a
cluster, ``PUBLISH`` reaches subscribers on every node). It should have a small connection
pool of its own: its poll must not wait behind the requests for a pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("farebox.stores.redis.epoch")
POLL_S = 0.25  # the safety-net poll's interval
BOUND_S = 1.0  # the staleness bound: no successful poll for this long and nothing is trusted
CLOSE_S = 1.0  # closing the subscriber takes at most this long
LISTEN_S = 0.25  # how long one wait for an announcement lasts (the loop then waits again)
STOP_RETRY_S = 0.5  # stop() cancels the watch again after this long, until it ends
TASK_NAME = "auth epoch watch"


class EpochClient(Protocol):
    """What the watcher needs of a Redis client (single server or cluster)."""

    def get(self, name: str) -> Any: ...

    def incr(self, name: str) -> Any: ...

    def publish(self, channel: str, message: str) -> Any: ...

    def pubsub(self) -> Any: ...


class EpochWatch:
    def __init__(
        self,
        client: EpochClient,
        *,
        poll_s: float = POLL_S,
        bound_s: float = BOUND_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < poll_s < bound_s:
            raise ValueError(f"poll_s ({poll_s}) must be above 0 and below bound_s ({bound_s})")
        self._client = client
        self._stopping = False  # set by stop(): the loops end at their next turn
        self._poll_s = poll_s
        self._bound_s = bound_s
        self._clock = clock
        self._key = ""
        self._seen = 0  # the largest value of the Redis counter seen
        self._local = 0  # what current() answers: moves on every change seen, never back
        self._confirmed_at = -float("inf")  # when the last successful GET (or INCR) was sent
        self._pending = False  # a bump of ours may not have reached Redis
        self._task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None  # a read on behalf of confirmed()

    async def start(self, key: str) -> None:
        """Read the counter ``key`` (also the channel's name) and watch it from now on.
        Starts nothing unless the first read succeeds."""
        if self._task is not None:
            raise RuntimeError("the epoch watch is already running")
        self._key = key
        self._stopping = False
        sent = self._clock()
        self._observe(await self._client.get(key), sent)
        self._task = asyncio.create_task(self._run(), name=f"{TASK_NAME} {key}")

    async def stop(self) -> None:
        """End the background work and wait for it (nothing is left running)."""
        refresh, task, self._refresh, self._task = self._refresh, self._task, None, None
        self._stopping = True  # redis-py's get_message can swallow a cancel: the loops check it
        if refresh is not None:
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # its callers saw it
                await refresh
        if task is not None:
            # cancelled again until it ends: redis-py can swallow a cancel in an await that then
            # waits on a socket (a connection cut mid-read), and one cancel would wait forever
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_RETRY_S)
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def current(self) -> int | None:
        """The local epoch, or ``None`` when it cannot be trusted: no successful read of the
        counter sent in the last ``bound_s``, or a bump of ours that has not reached Redis."""
        if self._pending or self._clock() - self._confirmed_at >= self._bound_s:
            return None
        return self._local

    async def confirmed(self) -> int | None:
        """``current()``; when that is untrusted, first one read of Redis, shared by every
        caller waiting meanwhile, so a replica whose poll was held up (a stalled event loop)
        answers again at once. ``None``: Redis did not answer (or the watch is stopped)."""
        now = self.current()
        if now is not None or self._task is None:
            return now
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._read(), name=f"{TASK_NAME} {self._key} read")
            self._refresh.add_done_callback(_retrieve)
        with contextlib.suppress(Exception):
            await asyncio.shield(self._refresh)  # a caller cancelled leaves it to the others
        return self.current()

    async def _read(self) -> None:
        if self._pending:
            await self.bump()
        sent = self._clock()
        self._observe(await self._client.get(self._key), sent)

    async def bump(self) -> None:
        """Announce a change to every replica. Raises what Redis raised when the ``INCR``
        may not have landed; until it is redone (by the poll) this replica trusts nothing."""
        sent = self._clock()
        try:
            value = await self._client.incr(self._key)
        except BaseException:  # no answer (or no one to wait for it): it may not have landed
            self._pending = True
            raise
        self._pending = False
        self._observe(value, sent)  # read-your-writes: adopted before anyone is told
        try:
            await self._client.publish(self._key, str(int(value)))
        except Exception as exc:  # the others' polls see the INCR within the bound
            log.warning("auth epoch %s announced late: PUBLISH failed (%s)", self._key, exc)

    def _observe(self, raw: Any, sent: float | None = None) -> None:
        """Adopt a value of the counter; ``sent`` is when the command that read it was sent
        (only a command's answer, not an announcement, vouches for freshness)."""
        value = int(raw) if raw is not None else 0
        if sent is not None:
            if sent - self._confirmed_at >= self._bound_s:
                self._local += 1  # trust returns after a lapse: drop what was cached before
            self._confirmed_at = max(self._confirmed_at, sent)
        if value > self._seen:
            self._seen = value
            self._local += 1

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._poll())
            group.create_task(self._listen())

    async def _poll(self) -> None:
        failing = False
        # ends on stop even if a cancel is lost: redis-py can turn a cancel that lands in a
        # connect to an unreachable Redis into a connection error, which the loop survives
        while not self._stopping:
            await asyncio.sleep(self._poll_s)  # the poll's pace
            try:
                await self._read()
            except Exception as exc:
                if self._stopping:
                    return
                if not failing:
                    log.warning("auth epoch %s: poll failed (%s: %s)", self._key,
                                type(exc).__name__, exc)  # fmt: skip
                failing = True
                continue
            if failing:
                log.warning("auth epoch %s: poll answers again", self._key)
            failing = False

    async def _listen(self) -> None:
        """Adopt announced values; resubscribe after any failure, at the poll's pace."""
        while not self._stopping:
            try:
                await self._subscribed()
            except Exception as exc:
                log.debug("auth epoch %s: subscriber lost (%s)", self._key, exc)
            await asyncio.sleep(self._poll_s)  # pacing of resubscription attempts

    async def _subscribed(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._key)
            while not self._stopping:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=LISTEN_S)  # fmt: skip
                if message is not None and message.get("type") == "message":
                    with contextlib.suppress(ValueError, TypeError):
                        self._observe(message["data"])
        finally:
            # bounded: closing a subscriber cancelled mid-read can wait on its socket, and a
            # stop must not hang on it (a broken connection is dropped with the client anyway)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_S):
                    await pubsub.aclose()


def _retrieve(task: asyncio.Task[None]) -> None:
    """A read's failure is seen by the callers of ``confirmed()``, not logged as lost."""
    if not task.cancelled():
        task.exception()
