"""SQLite store (WAL), safe for several worker processes on one host. All statements are
parameterised. Blocking calls run on one dedicated thread; only the tiny ``auth_epoch`` read
runs on the caller's thread, on its own read connection."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from farebox.core.budgets import Hold, HoldState
from farebox.core.records import (
    ApiKey,
    LedgerEntry,
    RequestPage,
    RequestQuery,
    Reservation,
    ReserveOutcome,
    Tenant,
    UsageQuery,
    UsageRow,
)
from farebox.errors import Conflict, NotFound
from farebox.stores.health import Health
from farebox.stores.sql import (
    KEY_COLS,
    LEDGER_COLS,
    SQLITE,
    TENANT_COLS,
    SQLAccounts,
    check_changes,
)
from farebox.stores.sqlite import budgets
from farebox.stores.sqlite.billing_roles import BillingRoles
from farebox.stores.sqlite.conn import connect, is_busy, lock_owner
from farebox.stores.sqlite.epoch_file import EpochFile
from farebox.stores.sqlite.identity_roles import IdentityRoles
from farebox.stores.sqlite.request_log import SQLiteRequestLog
from farebox.stores.sqlite.responses import SQLiteResponses
from farebox.stores.sqlite.rollups import SQLiteReports
from farebox.stores.sqlite.rows import LEDGER_INSERT, decode, encode, insert_entries, ledger_row
from farebox.stores.sqlite.schema import migrate
from farebox.stores.sqlite.traffic import SQLiteTraffic
from farebox.stores.sqlite.wal import (
    RESTART_EVERY,
    Checkpointer,
    HoldBack,
    WalLimits,
    limit_journal,
    wal_path,
)
from farebox.stores.tier_usage import sqlite_allot
from farebox.stores.usage_query import SQLITE_USAGE, usage_rows

T = TypeVar("T")
log = logging.getLogger("farebox.stores.sqlite")  # the name operators filter on
CHECKPOINT_EVERY = RESTART_EVERY  # commits between checkpoints (see stores/sqlite/wal.py)
ID_CHUNK = 500  # request ids per IN (...) lookup, well under SQLite's variable limit


class SQLiteStore(SQLAccounts, SQLiteReports, BillingRoles, IdentityRoles):
    exclusive = False  # True: this process must be the database's only user
    dialect = SQLITE
    key_order = "created_at"

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "normal",
        outbox: bool = True,
        wal: WalLimits | None = None,
    ) -> None:
        self._path = path
        self._wal_limits = wal or WalLimits()
        self.outbox = outbox  # record outbox positions (only needed when a sink is configured)
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._local: sqlite3.Connection | None = None
        self._local_lock = threading.Lock()
        self._wal = Checkpointer(
            self._wal_limits,
            lambda wait_ms: connect(path, synchronous, busy_timeout_ms=wait_ms),
            wal_path(path),
            HoldBack(path.with_name(path.name + "-ckpt")),
        )
        self._reserving: list[tuple[Reservation, asyncio.Future[ReserveOutcome]]] = []
        self._batches: set[asyncio.Task[Any]] = set()  # reserve batches and undos
        self._epoch = EpochFile(path.with_name(path.name + "-authepoch"))
        self._owner: int | None = None
        self._exporter_lock: int | None = None  # held by the one process that exports
        write, read = self._runners()
        self.traffic = SQLiteTraffic(write, read)  # batches of rows: written in the thread
        # one small row per answer, often on the request path: committed like a reservation
        # (here when uncontended, else in the thread; ``_write``); the purge in the thread
        self.responses = SQLiteResponses(write, read, put=self._write)
        self.request_log = SQLiteRequestLog(path, lambda: self.report_reader)
        self._billing_roles(write, read, _bump_epoch, lambda e: self._epoch.publish(e))

    def _runners(self) -> tuple[Any, Any]:
        """Run a function in a write transaction, and on the store's connection."""
        return (
            lambda fn: self._run(lambda: self._tx(fn)),
            lambda fn: self._run(lambda: fn(self._db)),
        )

    # lifecycle -----------------------------------------------------------------
    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._owner = lock_owner(self._path, self.exclusive)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="farebox-sqlite")
        self._conn = await self._run(lambda: connect(self._path, self._synchronous))
        limit_journal(self._conn, self._wal_limits)
        await self._run(lambda: migrate(self._db))
        # the caller's own connection: never waits for a lock (busy -> use the thread) and
        # never checkpoints (a checkpoint may fsync; the checkpointer's thread does it)
        self._local = connect(self._path, self._synchronous, busy_timeout_ms=0)
        self._local.execute("PRAGMA wal_autocheckpoint=0")
        limit_journal(self._local, self._wal_limits)
        self._wal.open()
        self._epoch.open()
        row = self._local.execute("SELECT value FROM meta WHERE name = 'auth_epoch'").fetchone()
        self._epoch.publish(int(row[0]))

    async def close(self) -> None:
        while self._batches:  # reserve batches still running, and the undos they start
            await asyncio.gather(*self._batches, return_exceptions=True)
        await self._wal.close()
        self.close_reports()
        if self._conn is not None:
            conn = self._conn
            await self._run(conn.close)
            self._conn = None
        if self._local is not None:
            self._local.close()
            self._local = None
        self._epoch.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._owner is not None:
            os.close(self._owner)  # releases the lock
            self._owner = None
        if self._exporter_lock is not None:
            os.close(self._exporter_lock)
            self._exporter_lock = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SQLiteStore is not open")
        return self._conn

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("SQLiteStore is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _tx(self, fn: Callable[[sqlite3.Connection], T], db: sqlite3.Connection | None = None) -> T:
        db = db or self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    async def ping(self) -> bool:
        return bool(await self._run(lambda: self._db.execute("SELECT 1").fetchone()))

    @property
    def ledger_health(self) -> Health | None:
        return None  # the ledger writer keeps the flag, and probes with ``probe_write``

    async def probe_write(self) -> bool:
        """A write that reaches the disk, so a full or read-only disk fails it: what the
        ledger's health probe asks while the ledger is down (``ping`` only reads)."""

        def write(db: sqlite3.Connection) -> bool:
            db.execute(
                "INSERT INTO meta(name, value) VALUES ('ledger_probe', '1') ON CONFLICT(name) "
                "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
            return True

        return await self._run(lambda: self._tx(write))

    # tenants and keys (read and updated by ``SQLAccounts``) -----------------------
    async def create_tenant(self, tenant: Tenant) -> None:
        await self._insert("tenants", TENANT_COLS, tenant, f"tenant {tenant.id!r} already exists")

    async def create_key(self, key: ApiKey) -> None:
        await self._insert("api_keys", KEY_COLS, key, f"key {key.id!r} cannot be created", True)

    async def auth_epoch(self) -> int:
        return self._epoch.read()

    # ledger ----------------------------------------------------------------------
    async def _write(
        self, fn: Callable[[sqlite3.Connection], T], after: Callable[[], None] | None = None
    ) -> T:
        """Run ``fn`` in a write transaction, then ``after`` (at once: a failure after the
        commit must not make the caller retry it). Uncontended, a commit in WAL mode takes
        microseconds: writes run here on the caller's connection rather than paying two
        thread hops (and never contend with this process's own thread). If another process
        holds the write lock, it waits in the thread. Each commit is counted for the
        checkpointer (``stores/sqlite/wal.py``), which keeps the WAL bounded in its own thread:
        nobody awaits it, and a write that comes while it finishes waits in the thread."""
        done = self._commit_here(fn)
        result = done[0] if done else await self._run(lambda: self._gated_tx(fn))
        self._wal.committed()
        if after is not None:
            after()
        return result

    def _commit_here(self, fn: Callable[[sqlite3.Connection], T]) -> list[T]:
        """``fn`` in a write transaction on the caller's connection, without waiting: a list
        of its result, or an empty list (and nothing written) if another connection holds
        the write lock."""
        local = self._local
        if local is None or self._wal.hold.active():
            return []  # not open, or a checkpoint is restarting the log
        try:
            with self._local_lock:
                result = self._tx(fn, local)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            return []
        return [result]

    def _gated_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``_tx`` in the thread, once no checkpoint is restarting the log."""
        self._wal.hold.wait()
        return self._tx(fn)

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Write entries and settle their reservations, in one transaction. A checkpoint in
        progress is waited for first: the ledger writer's batches then never race it, so
        the log starts again even when this process writes nothing else."""
        if entries:
            await self._wal.finished()
            await self._write(self._ledger_write(entries), lambda: self._ledger_written(entries))

    def append_ledger_now(self, entries: Sequence[LedgerEntry]) -> bool:
        """``append_ledger`` on the caller's thread if it can commit at once: not when another
        connection (another process, or this one's thread) holds the write lock, nor while
        a checkpoint runs (the ledger writer's queue then lets the event loop turn)."""
        if self._wal.running:
            return False
        if entries:
            if not self._commit_here(self._ledger_write(entries)):
                return False
            self._wal.committed()
            self._ledger_written(entries)
        return True

    def _ledger_write(self, entries: Sequence[LedgerEntry]) -> Callable[[sqlite3.Connection], None]:
        rows = [ledger_row(e) for e in entries]

        def write(db: sqlite3.Connection) -> None:
            if sqlite_allot(db, entries):  # a tiered plan's revenue (stores/tier_usage.py)
                rows[:] = [ledger_row(e) for e in entries]
            budgets.settle(db, entries)
            insert_entries(db, entries, rows, self.outbox)

        return write

    def _ledger_written(self, entries: Sequence[LedgerEntry]) -> None:
        """After the ledger transaction committed (the single-process store settles its
        in-memory counters here)."""

    # budgets -------------------------------------------------------------------------
    async def reserve(self, reservation: Reservation, *, busy: bool = False) -> ReserveOutcome:
        """Under load (``busy``: other requests are in flight), reservations made in the same
        event-loop turn share one transaction (group commit), each still succeeding or
        failing on its own, in arrival order. Otherwise commit at once, without waiting.

        A caller cancelled while its reserve is on its way (in its batch, or waiting in the
        thread for another process's write lock) holds nothing: the reserve still lands, and
        is undone once it has (``_undo_if_held``), rather than holding its counters until
        its lease runs out."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[ReserveOutcome]
        if not busy and not self._reserving:
            write = functools.partial(budgets.reserve, reservation=reservation)
            done = self._commit_here(write)
            if done:  # committed here without suspending: nothing can cancel it half way
                self._wal.committed()
                return done[0]
            pending = loop.create_task(self._write(write))  # contended: waits in the thread
            self._keep(pending)
        else:
            pending = loop.create_future()
            self._reserving.append((reservation, pending))
            if len(self._reserving) == 1:  # the first of this turn schedules the batch
                self._keep(loop.create_task(self._reserve_batch()))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(functools.partial(self._undo_if_held, reservation.id))
            raise

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """A write of the store's own, awaited by ``close``."""
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    def _undo_if_held(self, rid: str, landed: asyncio.Future[ReserveOutcome]) -> None:
        if landed.cancelled() or landed.exception() is not None or not landed.result().ok:
            return
        cancel = functools.partial(budgets.cancel, rid=rid)
        self._keep(asyncio.get_running_loop().create_task(self._write(cancel)))

    async def _reserve_batch(self) -> None:
        batch, self._reserving = self._reserving, []

        def write(db: sqlite3.Connection) -> list[ReserveOutcome]:
            return [budgets.reserve(db, reservation) for reservation, _ in batch]

        try:
            outcomes = await self._write(write)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def settle_counters(self, reservation: Reservation) -> None:
        entries = [reservation.unsettled]
        await self._write(lambda db: budgets.settle(db, entries))

    async def extend_leases(self, ids: Sequence[str], expires_at: float) -> None:
        if ids:
            await self._write(lambda db: budgets.extend(db, ids, expires_at))

    async def reclaim_expired(self, now: float) -> list[LedgerEntry]:
        def write(db: sqlite3.Connection) -> list[LedgerEntry]:
            entries = budgets.expired(db, now)
            db.executemany(LEDGER_INSERT, [ledger_row(e) for e in entries])
            return entries

        return await self._write(write)

    async def budget_states(self, holds: Sequence[Hold]) -> list[HoldState]:
        def read() -> list[HoldState]:
            with self._local_lock:
                assert self._local is not None
                return budgets.states(self._local, holds) if holds else []

        return read()

    async def record_alert(
        self, hold: Hold, threshold: int, tenant: str | None, now: float, detail: dict[str, Any]
    ) -> bool:
        text = orjson.dumps(detail).decode()
        return await self._write(
            lambda db: budgets.record_alert(db, hold, threshold, tenant, now, text)
        )

    async def alerts(self, tenant_id: str | None) -> list[dict[str, Any]]:
        return await self._run(lambda: budgets.alerts(self._db, tenant_id))

    # billing export --------------------------------------------------------------------------
    async def ledger_since(self, seq: int, limit: int) -> list[tuple[int, LedgerEntry]]:
        cols = ",".join(f"l.{c}" for c in LEDGER_COLS)
        sql = (
            f"SELECT o.seq, {cols} FROM outbox o JOIN ledger l ON l.request_id = o.request_id "
            "WHERE o.seq > ? ORDER BY o.seq LIMIT ?"
        )
        # a read for the exporter and reconciliation: on the reports' connection and thread
        rows = await self.report_reader.run(lambda db: db.execute(sql, (seq, limit)).fetchall())
        return [(int(r[0]), LedgerEntry(**decode(LEDGER_COLS, r[1:]))) for r in rows]

    async def claim_exporter(self) -> bool:
        if self._exporter_lock is not None:
            return True
        fd = os.open(self._path.with_name(self._path.name + "-exporter"), os.O_RDWR | os.O_CREAT,
                     0o600)  # fmt: skip
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._exporter_lock = fd
        return True

    async def export_cursor(self, sink: str) -> int:
        row = await self._run(
            lambda: self._db.execute(
                "SELECT seq FROM export_cursors WHERE sink = ?", (sink,)
            ).fetchone()
        )
        return int(row[0]) if row else 0

    async def set_export_cursor(self, sink: str, seq: int) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO export_cursors(sink, seq) VALUES (?, ?) "
                "ON CONFLICT(sink) DO UPDATE SET seq = max(seq, excluded.seq)",  # never back
                (sink, seq),
            )
        )

    async def add_dead_letters(self, sink: str, items: Sequence[dict[str, Any]]) -> None:
        rows = [(sink, i["key"], orjson.dumps(i["event"]).decode(), i["reason"], i["at"])
                for i in items]  # fmt: skip
        await self._write(
            lambda db: db.executemany(
                "INSERT OR REPLACE INTO export_dead(sink, key, event, reason, at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        )

    async def dead_letters(
        self, sink: str | None = None, since: int | None = None
    ) -> list[dict[str, Any]]:
        terms: list[tuple[str, Any]] = [("sink = ?", sink)] if sink else []
        if since is not None:
            terms.append(("json_extract(event, '$.timestamp') >= ?", since))
        where = f"WHERE {' AND '.join(t for t, _ in terms)}" if terms else ""
        params = [v for _, v in terms]
        sql = f"SELECT sink, key, event, reason, at FROM export_dead {where} ORDER BY at, key"
        rows = await self.report_reader.run(lambda db: db.execute(sql, params).fetchall())
        return [{"sink": r[0], "key": r[1], "event": orjson.loads(r[2]), "reason": r[3],
                 "at": r[4]} for r in rows]  # fmt: skip

    async def entries_by_id(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        ids, cols = list(dict.fromkeys(request_ids)), ",".join(LEDGER_COLS)

        def read(db: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for i in range(0, len(ids), ID_CHUNK):
                part = ids[i : i + ID_CHUNK]
                marks = ",".join("?" * len(part))
                sql = f"SELECT {cols} FROM ledger WHERE request_id IN ({marks})"
                rows += db.execute(sql, part).fetchall()
            return rows

        found = [LedgerEntry(**decode(LEDGER_COLS, r)) for r in await self.report_reader.run(read)]
        return {e.request_id: e for e in found}

    async def dead_letter_count(self, sink: str | None = None) -> int:
        where, params = ("WHERE sink = ?", (sink,)) if sink else ("", ())
        sql = f"SELECT count(*) FROM export_dead {where}"
        row = await self.report_reader.run(lambda db: db.execute(sql, params).fetchone())
        return int(row[0])

    async def remove_dead_letters(self, sink: str, keys: Sequence[str]) -> None:
        await self._write(
            lambda db: db.executemany(
                "DELETE FROM export_dead WHERE sink = ? AND key = ?", [(sink, k) for k in keys]
            )
        )

    # circuit breakers ----------------------------------------------------------------------
    async def breakers(self) -> dict[str, float]:
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT deployment, open_until FROM breakers WHERE open_until > 0"
            ).fetchall()
        )
        return {str(d): float(u) for d, u in rows}

    async def set_breaker(self, deployment: str, open_until: float) -> None:
        await self._run(
            lambda: self._tx(
                lambda db: db.execute(
                    "INSERT INTO breakers(deployment, open_until) VALUES (?, ?) "
                    "ON CONFLICT(deployment) DO UPDATE SET open_until = excluded.open_until",
                    (deployment, open_until),
                )
            )
        )

    async def claim_probe(self, deployment: str, now: float, until: float) -> bool:
        def claim(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE breakers SET probe_until = ? WHERE deployment = ? AND probe_until <= ?",
                (until, deployment, now),
            )
            return cur.rowcount == 1

        return await self._run(lambda: self._tx(claim))

    async def ledger(
        self, tenant_id: str | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        where = "tenant_id = ?" if tenant_id is not None else "1=1"
        params: list[Any] = [tenant_id] if tenant_id is not None else []
        order = "started_at DESC, request_id DESC"
        if limit is not None:
            order += " LIMIT ?"
            params.append(limit)
        rows = await self._select("ledger", LEDGER_COLS, where, params, order)
        return [LedgerEntry(**r) for r in reversed(rows)]

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        """From the rollups where the group allows, else from the entries of the range; on
        the reports' own connection either way (``stores/sqlite/rollups.py``)."""
        rows = await self.usage_from_rollups(query)
        if rows is not None:
            return rows
        sql, params = SQLITE_USAGE.statement(query, "ledger")
        return usage_rows(
            await self.report_reader.run(lambda db: db.execute(sql, params).fetchall())
        )

    async def requests(self, query: RequestQuery) -> RequestPage:
        return await self.request_log.page(query)

    # meta --------------------------------------------------------------------------
    async def get_meta(self, name: str) -> str | None:
        row = await self._run(
            lambda: self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def put_meta_if_absent(self, name: str, value: str) -> str:
        def write(db: sqlite3.Connection) -> str:
            db.execute("INSERT OR IGNORE INTO meta(name, value) VALUES (?, ?)", (name, value))
            return str(db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])

        return await self._run(lambda: self._tx(write))

    # helpers -----------------------------------------------------------------------
    async def _insert(
        self, table: str, cols: Sequence[str], record: Any, conflict: str, cause: bool = False
    ) -> None:
        """Insert ``record``'s row and bump the auth epoch; a taken id is ``Conflict``
        (``cause``: the message says which constraint)."""
        values = [encode(c, getattr(record, c)) for c in cols]
        sql = f"INSERT INTO {table}({','.join(cols)}) VALUES ({','.join('?' * len(values))})"

        def write(db: sqlite3.Connection) -> int:
            try:
                db.execute(sql, values)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"{conflict}: {exc}" if cause else conflict) from None
            return _bump_epoch(db)

        self._epoch.publish(await self._run(lambda: self._tx(write)))

    async def _select(
        self,
        table: str,
        cols: Sequence[str],
        where: str,
        params: Sequence[Any],
        order: str | None = None,
    ) -> list[dict[str, Any]]:
        sql = f"SELECT {','.join(cols)} FROM {table} WHERE {where}"
        if order:
            sql += f" ORDER BY {order}"
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return [decode(cols, row) for row in rows]

    async def _update(
        self, table: str, cols: Sequence[str], row_id: str, changes: dict[str, Any], what: str
    ) -> dict[str, Any]:
        """Apply ``changes``, bump the auth epoch, and return the updated row."""
        check_changes(cols, changes)
        assignments = ",".join(f"{c} = ?" for c in changes) or "id = id"
        values = [encode(c, v) for c, v in changes.items()] + [row_id]
        sql = f"UPDATE {table} SET {assignments} WHERE id = ? RETURNING {','.join(cols)}"

        def write(db: sqlite3.Connection) -> tuple[dict[str, Any], int]:
            rows = db.execute(sql, values).fetchall()
            if not rows:
                raise NotFound(f"{what} {row_id!r} not found")
            return decode(cols, rows[0]), _bump_epoch(db)

        row, epoch = await self._run(lambda: self._tx(write))
        self._epoch.publish(epoch)
        return row


def _bump_epoch(db: sqlite3.Connection) -> int:
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'auth_epoch'")
    row = db.execute("SELECT value FROM meta WHERE name = 'auth_epoch'").fetchone()
    return int(row[0])
