"""Circuit breakers, one per deployment (``provider/model``): closed, open, half-open.

Each process counts its own calls. A breaker opens after ``failures`` retryable failures in a
row, or when at least ``min_requests`` calls within ``window_s`` failed at ``failure_rate`` or
more. Opening is written to the shared store (SQLite for the workers of one host, Redis for
replicas), and every process reads the open breakers from it every ``sync_s``, so one
process's discovery spares the others. Nothing on the request path waits on the store.

After ``cooldown_s`` the breaker is half-open: exactly one caller, across every process (the
store arbitrates), sends a probe. Success closes the breaker everywhere; failure opens it for
another cooldown. Only retryable failures (connect errors, timeouts, 429, 5xx, 529) count; a
client's own error says nothing about the deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from farebox.config.settings import BreakerSettings
from farebox.core.routing import Router, Target
from farebox.stores.base import BreakerStore

log = logging.getLogger("farebox.breakers")  # the name operators filter on
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def deployment(target: Target) -> str:
    return f"{target.provider}/{target.model}"


@dataclass(slots=True)
class _Breaker:
    open_until: float = 0.0  # > 0: open until then (then half-open)
    version: int = 0  # bumped by every local change, so a stale shared read cannot undo it
    streak: int = 0  # retryable failures in a row
    # calls in the window, per second: [second, calls, failures]; at most window_s entries
    calls: deque[list[int]] = field(default_factory=deque)
    probing: bool = False  # this process holds the half-open probe
    successes: int = 0
    failures: int = 0


def _state(b: _Breaker, now: float) -> str:
    if not b.open_until:
        return CLOSED
    return OPEN if now < b.open_until else HALF_OPEN


class Breakers:
    def __init__(
        self,
        store: BreakerStore,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._publishing: dict[str, int] = {}  # deployments whose change is being written

    def _get(self, name: str) -> _Breaker:
        found = self._breakers.get(name)
        if found is None:
            found = self._breakers[name] = _Breaker()
        return found

    def state(self, target: Target) -> str:
        b = self._breakers.get(deployment(target))
        return CLOSED if b is None else _state(b, self._clock())

    async def acquire(self, target: Target) -> bool:
        """May a call go to ``target`` now? Closed: yes. Open: no, at no cost. Half-open: only
        for the one caller, across every process, that wins the probe. Ask just before
        calling, and end every acquired call with ``record`` or ``release``."""
        b = self._breakers.get(deployment(target))
        if b is None or not b.open_until:
            return True
        now = self._clock()
        if now < b.open_until or b.probing:
            return False
        return await self._claim(target, b, now)

    def release(self, target: Target) -> None:
        """An acquired call ended without an outcome (cancelled, or a gateway error): give
        the probe back, so that a later caller may probe once the claim runs out."""
        b = self._breakers.get(deployment(target))
        if b is not None:
            b.probing = False

    async def _claim(self, target: Target, b: _Breaker, now: float) -> bool:
        until = now + self._settings.cooldown_s
        try:
            won = await self._store.claim_probe(deployment(target), now, until)
        except Exception:
            log.exception("could not claim the probe of %s", deployment(target))
            return False
        b.probing = won
        return won

    def record(self, target: Target, ok: bool) -> None:
        """The outcome of one call; ``ok`` is False only for retryable upstream failures."""
        name = deployment(target)
        b = self._get(name)
        now = self._clock()
        if ok:
            b.successes += 1
            b.streak = 0
        else:
            b.failures += 1
            b.streak += 1
        second = int(now)
        if b.calls and b.calls[-1][0] == second:
            b.calls[-1][1] += 1
            b.calls[-1][2] += 0 if ok else 1
        else:
            b.calls.append([second, 1, 0 if ok else 1])
        horizon = now - self._settings.window_s
        while b.calls and b.calls[0][0] < horizon:
            b.calls.popleft()
        if b.probing or b.open_until:
            b.probing = False
            if ok:
                self._set(name, b, 0.0)
            else:
                self._set(name, b, now + self._settings.cooldown_s)
            return
        if not ok and self._tripped(b):
            self._set(name, b, now + self._settings.cooldown_s)

    def _tripped(self, b: _Breaker) -> bool:
        s = self._settings
        if b.streak >= s.failures:
            return True
        if s.failure_rate is None:
            return False
        calls = sum(c[1] for c in b.calls)
        failed = sum(c[2] for c in b.calls)
        return calls >= s.min_requests and failed >= s.failure_rate * calls

    def _set(self, name: str, b: _Breaker, open_until: float) -> None:
        if bool(open_until) != bool(b.open_until):
            log.warning("breaker %s %s", name, "opened" if open_until else "closed")
        b.open_until = open_until
        b.version += 1
        b.streak = 0
        b.calls.clear()
        task = asyncio.get_running_loop().create_task(self._publish(name, open_until))
        self._pending.add(task)
        self._publishing[name] = self._publishing.get(name, 0) + 1
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(lambda _t: self._published(name))

    def _published(self, name: str) -> None:
        left = self._publishing.get(name, 1) - 1
        if left:
            self._publishing[name] = left
        else:
            self._publishing.pop(name, None)

    async def _publish(self, name: str, open_until: float) -> None:
        try:
            await self._store.set_breaker(name, open_until)
        except Exception:
            log.exception("could not share the breaker state of %s", name)

    async def sync(self) -> None:
        """Adopt the breakers other processes opened or closed. A breaker this process changed
        while the read was under way, or whose change is still being written, keeps its own
        state: the read may predate it."""
        versions = {name: b.version for name, b in self._breakers.items()}
        shared = await self._store.breakers()

        def stale(name: str, b: _Breaker) -> bool:
            return b.probing or name in self._publishing or versions.get(name) != b.version

        for name, b in self._breakers.items():
            if name not in shared and b.open_until and not stale(name, b):
                b.open_until = 0.0  # closed elsewhere (a probe succeeded)
        for name, until in shared.items():
            b = self._get(name)
            if not stale(name, b) or (name not in versions and not b.version):
                b.open_until = until

    def snapshot(self) -> list[dict[str, Any]]:
        """Every deployment seen so far, for the admin API and metrics."""
        now = self._clock()
        out = []
        for name, b in sorted(self._breakers.items()):
            out.append({"deployment": name, "state": _state(b, now),
                        "open_until": b.open_until or None, "successes": b.successes,
                        "failures": b.failures, "failure_streak": b.streak})  # fmt: skip
        return out

    # background sync -------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sync_s)
            try:
                await self.sync()
            except Exception:
                log.exception("could not read the shared breaker states")


def deployment_rows(router: Router, snapshot: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every deployment of every model in ``router``, with its breaker state and call counts
    from ``snapshot`` (``Breakers.snapshot()``)."""
    seen = {d["deployment"]: d for d in snapshot}
    out: dict[str, dict[str, Any]] = {}
    for name in router.names():
        for target in router.resolve(name) or ():
            ident = deployment(target)
            row = out.get(ident)
            if row is None:
                row = out[ident] = {
                    "deployment": ident, "provider": target.provider, "model": target.model,
                    "weight": target.weight, "aliases": [], "state": "closed",
                    "open_until": None, "successes": 0, "failures": 0, "failure_streak": 0,
                    **seen.get(ident, {}),
                }  # fmt: skip
            row["aliases"].append(name)
    return list(out.values())
