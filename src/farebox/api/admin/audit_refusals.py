"""Refused attempts without a valid admin key, folded: per client IP and operation, a record of
the first attempt of a window and one of the count of the rest (``count``: how many attempts a
record stands for).

A 401 costs its caller nothing to send, and each record is a globally serialized append: so
the first anonymous refusal of a (client IP, operation) pair is recorded at once (``count: 1``)
and opens a window of ``audit.refusal_window_s`` seconds; the refusals of that pair inside the
window are only counted in memory. When the window has passed (checked on the next refusal of
any pair), or when the process stops, one record is written for the ones counted, with their
``count``, the window's start (``since``), the last one's request id, and their target if they
all named one. So the sum of ``count`` over a pair's records is the number of its refused
attempts: every refused attempt is in the log, as a record or in a record's count. A path that
no operation serves is one operation per method (``POST *``), so that varying the path does not
open new windows.

The windows are per process (each worker folds its own), and at most ``MAX_WINDOWS`` are
open: past that, the oldest is closed (its count written) to make room.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from farebox.core.audit import AuditEntry
from farebox.identity.audit import AuditLog

log = logging.getLogger("farebox.audit")
MAX_WINDOWS = 10_000
Pair = tuple[str, str]  # (client IP, operation)


@dataclass
class Window:
    pair: Pair
    opened: float
    first: AuditEntry  # the record that opened it (its actor, action, target, ip, status)
    folded: int = 0  # refusals counted since, not yet written
    last_request_id: str = ""
    target: str = ""  # theirs, when they all named one; else empty


def counted(entry: AuditEntry, count: int, **more: object) -> AuditEntry:
    return replace(entry, change={**entry.change, "count": count, **more})


class Refusals:
    """Anonymous refusals of one process, folded per (client IP, operation) and window."""

    def __init__(self, audit: AuditLog, clock: Callable[[], float], window_s: float) -> None:
        self.audit = audit
        self.clock = clock
        self.window_s = window_s
        self.windows: dict[Pair, Window] = {}  # oldest first (a reopened one moves last)

    def pending(self) -> int:
        """Refusals counted in open windows, not yet in a record."""
        return sum(w.folded for w in self.windows.values())

    async def record(self, entry: AuditEntry, pair: Pair) -> None:
        """Record the refusal ``entry`` of ``pair``, or count it into the pair's window."""
        if self.window_s <= 0:
            await self.audit.record(counted(entry, 1))
            return
        now = self.clock()
        await self._close(lambda w: w.opened + self.window_s <= now)
        window = self.windows.get(pair)
        if window is not None:
            same = window.folded == 0 or window.target == entry.target
            window.target = entry.target if same else ""
            window.folded += 1
            window.last_request_id = entry.request_id
            return
        if len(self.windows) >= MAX_WINDOWS:
            oldest = next(iter(self.windows))
            await self._write(self.windows.pop(oldest))
        self.windows[pair] = Window(pair, now, entry)
        await self.audit.record(counted(entry, 1))

    async def flush(self) -> None:
        """Write every window's count (the process stops)."""
        await self._close(lambda _w: True)

    async def _close(self, due: Callable[[Window], bool]) -> None:
        # in opening order: stop at the first window not yet due (all later ones opened later)
        while self.windows:
            pair, window = next(iter(self.windows.items()))
            if not due(window):
                return
            del self.windows[pair]  # before the write: a refusal meanwhile opens a new one
            await self._write(window)

    async def _write(self, window: Window) -> None:
        if not window.folded:
            return
        entry = replace(window.first, action=window.pair[1], target=window.target,
                        request_id=window.last_request_id,
                        change={"before": None, "after": None, "request": None})  # fmt: skip
        try:
            await self.audit.record(counted(entry, window.folded, since=window.opened))
        except Exception:  # the attempts were refused: say loudly that their count is lost
            log.exception("audit record of %d folded refusals not stored", window.folded)
