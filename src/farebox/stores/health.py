"""Whether a store's database answers, as one flag the request path can read for free.

A ``Health`` is flipped down by any connection-level failure (a refused or dropped connection,
a timeout) on whatever path met it, and up again only by a successful probe. A ``Prober`` pings
the database in the background: while the flag is down every ``down_every`` seconds, so the
service recovers without a restart; while it is up every ``up_every`` seconds (or never), so a
database that went away while nobody was writing is noticed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("farebox.health")


class Health:
    """One database's reachability. Reading ``up`` is an attribute access."""

    __slots__ = ("_changed", "name", "reason", "since", "up")

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True
        self.reason = ""
        self.since = time.monotonic()
        self._changed = asyncio.Event()

    def down(self, reason: str) -> None:
        if self.up:  # logged once per outage, not once per failed call
            log.error("%s unreachable (%s): refusing requests until it answers", self.name, reason)
            self.up, self.reason, self.since = False, reason, time.monotonic()
            self._changed.set()

    def restore(self) -> None:
        if not self.up:
            log.warning("%s reachable again after %.1f s", self.name, self.elapsed())
            self.up, self.reason, self.since = True, "", time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.since

    async def wait_down(self) -> None:
        """Return once the flag is down (at once if it is)."""
        while self.up:
            self._changed.clear()
            await self._changed.wait()


@dataclass(frozen=True, slots=True)
class ProbeTimes:
    down_every: float = 0.5
    up_every: float | None = 1.0  # None: no probe while up (failures alone flip it down)
    timeout: float = 1.0


class Prober:
    """Pings in the background and keeps ``health`` in step with the answers."""

    def __init__(
        self, health: Health, ping: Callable[[], Awaitable[bool]], times: ProbeTimes
    ) -> None:
        self._health = health
        self._ping = ping
        self._times = times
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="health-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> bool:
        """One probe now: True if the database answered within the probe timeout."""
        try:
            async with asyncio.timeout(self._times.timeout):
                ok = bool(await self._ping())
        except Exception as exc:  # any failure to answer is "down"; the reason is kept
            self._health.down(f"probe failed: {type(exc).__name__}: {exc}")
            return False
        if ok:
            self._health.restore()
        else:
            self._health.down("probe failed")
        return ok

    async def _run(self) -> None:
        times, health = self._times, self._health
        while True:
            if health.up and times.up_every is None:
                await health.wait_down()
            await asyncio.sleep(times.down_every if not health.up else (times.up_every or 0.0))
            await self.check()
