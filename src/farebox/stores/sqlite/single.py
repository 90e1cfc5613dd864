"""SQLite for a gateway that is the only process using its database (``server.single_process``).

Budget and rate-limit counters live in this process's memory, where reserving is a few
dictionary operations instead of a write transaction. What must survive a crash still does:

- Settled spend is written to the database's counters in the same transaction as the ledger
  entry, exactly as in the shared mode; counters are loaded from there on first use.
- Every reservation is appended to a journal file (``<db>-inflight``, one ``write`` call)
  before the upstream call. If the process dies, the next start writes an ``unsettled``
  ledger entry for each journalled reservation that never reached the ledger, so a possibly
  billed upstream call stays visible for reconciliation, as with shared-mode leases.

An exclusive ``flock`` on ``<db>-owner`` makes the ownership real: a second process on the
same database, in either mode, is refused at start-up (shared-mode processes hold the same
lock shared), because counters it cannot see would let the two overspend together.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from farebox.core.budgets import Hold, HoldState, settled_amount
from farebox.core.records import LedgerEntry, Reservation, ReserveOutcome, ledgered
from farebox.stores.memory.budgets import Buckets, MemoryBudgets
from farebox.stores.sqlite import budgets
from farebox.stores.sqlite.conn import owner_path
from farebox.stores.sqlite.rows import LEDGER_INSERT, insert_entries, ledger_row
from farebox.stores.sqlite.store import SQLiteStore
from farebox.stores.sqlite.wal import WalLimits
from farebox.stores.tier_usage import sqlite_allot

COMPACT_AFTER_BYTES = 1 << 20  # the journal is emptied once nothing is in flight past this
log = logging.getLogger("farebox.stores.sqlite_single")  # the name operators filter on
_SPEND = (
    "INSERT INTO budget_counters(key, bucket, used, reserved) VALUES (?, ?, ?, 0) "
    "ON CONFLICT(key, bucket) DO UPDATE SET used = used + excluded.used"
)


class SingleProcessSQLiteStore(SQLiteStore):
    exclusive = True

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "normal",
        outbox: bool = True,
        wal: WalLimits | None = None,
    ) -> None:
        super().__init__(path, synchronous=synchronous, outbox=outbox, wal=wal)
        self._counters = MemoryBudgets(load=self._load_counter)
        self._journal_path = path.with_name(path.name + "-inflight")
        self._journal: int | None = None
        self._journal_bytes = 0
        self._lines: list[tuple[bytes, str, asyncio.Future[None]]] = []

    async def open(self) -> None:
        await super().open()  # takes the owner lock exclusively (``exclusive``)
        await self._recover()
        self._journal = os.open(self._journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._journal_bytes = os.fstat(self._journal).st_size

    async def close(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
        await super().close()

    async def _recover(self) -> None:
        """Turn what dead holders left into ``unsettled`` entries: journalled reservations
        that never reached the ledger, and shared-mode reservations still held."""
        journal = self._journal_path.read_bytes() if self._journal_path.exists() else b""
        lost = []
        for line in journal.splitlines():
            try:
                lost.append(LedgerEntry(**orjson.loads(line)))
            except (orjson.JSONDecodeError, TypeError):
                continue  # a line cut short by the crash: its write never completed

        def write(db: sqlite3.Connection) -> None:
            # nothing else can be alive: this process holds the database exclusively
            held = budgets.expired(db, float("inf"))
            db.executemany(LEDGER_INSERT, [ledger_row(e) for e in held])
            lost_rows = [ledger_row(e) for e in ledgered(lost)]  # a token count's: none
            db.executemany(LEDGER_INSERT, lost_rows)  # OR IGNORE: settled

        await self._write(write)
        if journal:
            self._journal_path.write_bytes(b"")

    def _load_counter(self, key: str) -> Buckets:
        assert self._local is not None
        with self._local_lock:
            rows = self._local.execute(
                "SELECT bucket, used, reserved FROM budget_counters WHERE key = ?", (key,)
            ).fetchall()
        return {float(b): [int(u), int(r)] for b, u, r in rows}

    # budgets ----------------------------------------------------------------------------
    async def reserve(self, reservation: Reservation, *, busy: bool = False) -> ReserveOutcome:
        outcome = self._counters.reserve(reservation)
        if not outcome.ok or reservation.ledger_free:  # nothing to recover of a token count
            return outcome
        line = orjson.dumps(reservation.unsettled) + b"\n"
        if not busy and not self._lines:
            self._append([line], [reservation.id])
            return outcome
        # under load, the reservations of one loop turn share one write
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._lines.append((line, reservation.id, done))
        if len(self._lines) == 1:
            loop.call_soon(self._flush)
        await done
        return outcome

    def _flush(self) -> None:
        batch, self._lines = self._lines, []
        try:
            self._append([line for line, _, _ in batch], [rid for _, rid, _ in batch])
        except Exception as exc:
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, _, done in batch:
            if not done.done():
                done.set_result(None)

    def _append(self, lines: list[bytes], ids: list[str]) -> None:
        """Journal reservations before they take effect; undo them if that fails."""
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        try:
            assert self._journal is not None
            os.write(self._journal, data)
        except BaseException:
            for rid in ids:  # nothing may stay held unjournalled
                self._counters.cancel(rid)
            raise
        self._journal_bytes += len(data)

    def _spend(
        self, entries: Sequence[LedgerEntry]
    ) -> tuple[list[tuple[str, float, int]], list[tuple[str]]]:
        """What settling ``entries`` adds to the stored counters (summed: a batch often
        shares its counters), and the request ids of those settled after their lease
        expired."""
        return _summed(entries, [self._counters.settling(e.reservation_id) for e in entries])

    def _ledger_write(self, entries: Sequence[LedgerEntry]) -> Callable[[sqlite3.Connection], None]:
        """The entries and their counters' spend in one transaction (the reservations are
        settled in memory once it committed, in ``_ledger_written``)."""
        found = [self._counters.settling(e.reservation_id) for e in entries]  # the loop's
        spend, late = _summed(entries, found)
        rows = [ledger_row(e) for e in entries]

        def write(db: sqlite3.Connection) -> None:
            if sqlite_allot(db, entries):  # a tiered plan's revenue (stores/tier_usage.py)
                rows[:] = [ledger_row(e) for e in entries]
                spend[:] = _summed(entries, found)[0]  # revenue counters: the exact revenue
            db.executemany(_SPEND, spend)
            # a placeholder left by an expired lease gives way to the real entry
            db.executemany("DELETE FROM ledger WHERE request_id = ? AND status = 'unsettled'", late)
            insert_entries(db, entries, rows, self.outbox)

        return write

    async def settle_counters(self, reservation: Reservation) -> None:
        """The count's spend (its request) to the stored counters, as a request's goes with
        its ledger entry, then settled in memory; no ledger row."""
        entries = [reservation.unsettled]
        spend, _ = self._spend(entries)
        if spend:
            await self._write(lambda db: db.executemany(_SPEND, spend))
        self._counters.settle(entries, {})

    def _ledger_written(self, entries: Sequence[LedgerEntry]) -> None:
        """Settle in memory what just committed. Nothing here may fail: the entries are
        durable, and a retry would count their spend twice."""
        self._counters.settle(entries, {})
        if self._journal_bytes > COMPACT_AFTER_BYTES:
            try:
                self._compact()
            except OSError as exc:  # the journal is only longer than it needs to be
                log.warning("compacting %s failed (%s); retried later", self._journal_path, exc)

    def _compact(self) -> None:
        """Rewrite the journal with only the reservations still in flight (written to a new
        file, then renamed over the old one, so a crash leaves one or the other whole)."""
        held = self._counters.in_flight_entries()
        data = b"".join(orjson.dumps(e) + b"\n" for e in held)
        fresh = self._journal_path.with_name(self._journal_path.name + ".new")
        out = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(out, data)
        finally:
            os.close(out)
        journal = os.open(fresh, os.O_WRONLY | os.O_APPEND)  # before the rename: if this
        try:  # fails, the old journal stays in place and in use
            os.replace(fresh, self._journal_path)
        except BaseException:
            os.close(journal)
            raise
        assert self._journal is not None
        old, self._journal = self._journal, journal
        os.close(old)
        self._journal_bytes = len(data)

    async def extend_leases(self, ids: Sequence[str], expires_at: float) -> None:
        self._counters.extend(ids, expires_at)

    async def reclaim_expired(self, now: float) -> list[LedgerEntry]:
        entries = self._counters.expired(now)
        if entries:
            rows = [ledger_row(e) for e in entries]
            await self._write(lambda db: db.executemany(LEDGER_INSERT, rows))
        return entries

    async def budget_states(self, holds: Sequence[Hold]) -> list[HoldState]:
        return [self._counters.state(h) for h in holds]


def owned_exclusively(path: Path) -> bool:
    """Whether a single-process gateway holds ``path`` now (the owner lock, exclusively)."""
    try:
        fd = os.open(owner_path(path), os.O_RDONLY)
    except FileNotFoundError:
        return False  # never opened by a farebox process: nobody owns it
    except PermissionError:
        return False  # not ours to read: opening the database will say so itself
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor drops the probe's lock
    return False


def owner_busy(path: Path) -> str | None:
    """Why ``path`` cannot be owned by a single process now, or None if it can."""
    fd = os.open(owner_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"{path} is in use by another farebox process"
    finally:
        os.close(fd)
    return None


def _summed(
    entries: Sequence[LedgerEntry], found: Sequence[tuple[Reservation, bool] | None]
) -> tuple[list[tuple[str, float, int]], list[tuple[str]]]:
    """``SingleProcessSQLiteStore._spend`` of entries whose reservations are ``found`` (each
    with whether its lease had expired): pure, so the write's thread may sum again."""
    spend: dict[tuple[str, float], int] = {}
    late: list[tuple[str]] = []
    for entry, held in zip(entries, found, strict=True):
        if held is None:
            continue
        reservation, reclaimed = held
        for hold in reservation.holds:
            amount = settled_amount(hold.unit, entry.cost, entry.tokens, entry.revenue)
            if amount:
                slot = (hold.key, hold.bucket)
                spend[slot] = spend.get(slot, 0) + amount
        if reclaimed:
            late.append((entry.request_id,))
    return [(key, bucket, n) for (key, bucket), n in spend.items()], late
