"""Keeping a SQLite database's write-ahead log (WAL) within a bound, in every process.

SQLite appends every commit to ``<db>-wal``; a checkpoint copies the log back into the
database, and the log starts again from its beginning only when a checkpoint has copied all
of it and no reader still uses it. A PASSIVE checkpoint never waits, so under sustained
writes from several connections (the event loop's, the store's thread, other workers) it
never catches up and the log grows without end. Here each process:

- sets ``PRAGMA journal_size_limit`` on its connections: when the log starts again, the
  file is cut back to that size;
- counts its commits and, every ``RESTART_EVERY`` of them, runs a checkpoint on its own
  connection in its own thread (never on the event loop, and no request awaits it): first
  PASSIVE, which copies without holding anyone back, then RESTART, which holds new writes
  back only while it copies what was committed meanwhile and waits (at most
  ``WalLimits.wait_ms``) for readers to leave the log, so the next commit starts it again.
  Meanwhile every process's writes hold back (``HoldBack``, a flag in a small shared
  file that each write reads) rather than race it for the lock: SQLite's busy handler
  polls, and busy writers in other processes would win every time;
- every ``CHECK_EVERY`` commits looks at the log's size (one ``stat``); past
  ``WalLimits.restart_bytes`` it runs the same checkpoint at once, in TRUNCATE mode, which
  also empties the file.

So the log stays under ``WalLimits.max_bytes`` under sustained load: it is cut back once it
passes a quarter of that, and what is written meanwhile is a few commits. Only a reader that
keeps one read transaction open for longer than the checkpoints' wait can hold it longer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from farebox.stores.sqlite.epoch_file import SharedWord

log = logging.getLogger("farebox.stores.sqlite_wal")  # the name operators filter on
MIB = 1 << 20
RESTART_EVERY = 256  # commits of this process between two restarting checkpoints
CHECK_EVERY = 16  # commits between two looks at the log's size
RETRY_AFTER_S = 0.25  # a checkpoint that could not finish is not retried sooner than this
HOLD_POLL_S = 0.0005  # how often a held-back write in a thread looks again


@dataclass(frozen=True)
class WalLimits:
    """``max_bytes``: the bound the WAL file stays under; ``wait_ms``: how long a
    checkpoint may hold new writes back while it finishes (its busy timeout)."""

    max_bytes: int = 64 * MIB
    wait_ms: int = 100

    @property
    def restart_bytes(self) -> int:
        """Past this size the log is checkpointed and emptied at once; it is also the
        ``journal_size_limit`` a restarted log is cut back to."""
        return max(self.max_bytes // 4, MIB)


def limit_journal(conn: sqlite3.Connection, limits: WalLimits) -> None:
    conn.execute(f"PRAGMA journal_size_limit={int(limits.restart_bytes)}")


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


class HoldBack(SharedWord):
    """A deadline (CLOCK_MONOTONIC nanoseconds, the same in every process on the host) in
    a shared 8-byte file: until it passes, writers of every process hold back so that a
    checkpoint can restart the log. A checkpointer that dies leaves a deadline that soon
    passes, never a stuck flag."""

    def _read(self) -> int:
        return self.read() if self.is_open else 0

    def active(self) -> bool:
        """Whether writers should hold back now: one memory read when they need not."""
        until = self._read()
        return until != 0 and until > time.monotonic_ns()

    def wait(self) -> None:
        """Block (in a thread, never on the event loop) until writers may go on."""
        while self.active():
            time.sleep(HOLD_POLL_S)

    def hold(self, for_ms: int) -> int:
        until = time.monotonic_ns() + for_ms * 1_000_000
        if self.is_open:
            self.write(until)
        return until

    def release(self, until: int) -> None:
        if self._read() == until:  # not another process's
            self.write(0)


class Checkpointer:
    """One per open store: its own connection and thread, driven by ``committed()``."""

    def __init__(
        self,
        limits: WalLimits,
        connect: Callable[[int], sqlite3.Connection],
        wal: Path,
        hold: HoldBack,
    ) -> None:
        self._limits = limits
        self._connect = connect  # busy timeout in ms -> a new connection on the database
        self._wal = wal
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._commits = 0
        self._due = RESTART_EVERY
        self._retry_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.hold = hold

    def open(self) -> None:
        self._conn = self._connect(self._limits.wait_ms)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # this class decides
        limit_journal(self._conn, self._limits)
        self.hold.open()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="farebox-wal")

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.hold.close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def finished(self) -> None:
        """Wait until the checkpoint in progress (if any) ends; never cancels it."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task])

    def committed(self) -> None:
        """A commit of this process's: O(1), never blocks, never raises."""
        self._commits += 1
        if self._commits % CHECK_EVERY or self._executor is None:
            return
        if self.running:
            return  # one checkpoint at a time
        truncate = self._size() > self._limits.restart_bytes
        if not truncate and self._commits < self._due:
            return
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._due = self._commits + RESTART_EVERY
        self._task = asyncio.get_running_loop().create_task(self._checkpoint(truncate))

    def _size(self) -> int:
        try:
            return os.stat(self._wal).st_size
        except OSError:
            return 0

    async def _checkpoint(self, truncate: bool) -> None:
        """Run one checkpoint in the thread. A failure is only logged: the data is
        committed in the WAL, and the next checkpoint tries again."""
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        try:
            finished = await loop.run_in_executor(self._executor, self._run, truncate)
        except Exception as exc:
            finished = False
            log.warning("WAL checkpoint of %s failed (%s); the next one retries", self._wal, exc)
        if not finished:
            self._retry_at = time.monotonic() + RETRY_AFTER_S

    def _run(self, truncate: bool) -> bool:
        """PASSIVE (copies without holding writers back), then RESTART or TRUNCATE for what
        was committed meanwhile. False when it could not finish (a reader stayed in the log
        past the wait); True when it did, or when another process's checkpoint is running
        (it does the same work)."""
        db = self._conn
        assert db is not None
        # fetch each result: an unfinished statement would keep a read transaction open
        busy, log_frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy and log_frames < 0:
            return True  # another connection is checkpointing right now
        mode = "TRUNCATE" if truncate else "RESTART"
        # writers hold back for at most twice the wait, even if this thread were stuck
        until = self.hold.hold(2 * self._limits.wait_ms)
        try:
            busy, log_frames, _ = db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        finally:
            self.hold.release(until)
        return not busy or log_frames < 0
