"""The anomaly wing's background rounds, shared by ``watch`` and ``multiplication``: flush the
counts every ``flush_s`` and run a check every ``check_s``; a failed round is logged and the next
round retries. ``stop_rounds`` cancels the task and flushes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("farebox.anomaly")  # the name operators filter on


async def run_rounds(
    check: Callable[[], Awaitable[object]],
    flush: Callable[[], Awaitable[object]],
    *,
    check_s: float,
    flush_s: float,
    what: str,
) -> None:
    """Loop forever: a check when one is due, a flush otherwise."""
    due = time.monotonic() + check_s
    while True:
        await asyncio.sleep(min(flush_s, check_s))
        try:
            if time.monotonic() >= due:
                due = time.monotonic() + check_s
                await check()
            else:
                await flush()
        except Exception:
            log.exception("%s round failed; retrying next round", what)


async def stop_rounds(
    task: asyncio.Task[None] | None, flush: Callable[[], Awaitable[object]]
) -> None:
    """Cancel the rounds' task (if any), wait for it, then flush once more."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with contextlib.suppress(Exception):
        await flush()
