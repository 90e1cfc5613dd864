"""The anomaly wing's background rounds, shared by ``watch`` and ``multiplication``: flush the
counts every ``flush_s`` and run a check every ``check_s``; a failed round is logged and the next
round retries. ``stop`` cancels the task and flushes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("farebox.anomaly")  # the name operators filter on

Step = Callable[[], Awaitable[object]]


class Rounds:
    """One watch's background task: ``start`` it once (again after ``stop``), ``stop`` it."""

    def __init__(self, check: Step, flush: Step, *, check_s: float, flush_s: float, what: str):
        self._check = check
        self._flush = flush
        self._check_s = check_s
        self._flush_s = flush_s
        self._what = what
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        """Loop forever: a check when one is due, a flush otherwise."""
        due = time.monotonic() + self._check_s
        while True:
            await asyncio.sleep(min(self._flush_s, self._check_s))
            try:
                if time.monotonic() >= due:
                    due = time.monotonic() + self._check_s
                    await self._check()
                else:
                    await self._flush()
            except Exception:
                log.exception("%s round failed; retrying next round", self._what)

    async def stop(self) -> None:
        """Cancel the task (if any), wait for it, then flush once more."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._flush()
