"""PostgreSQL store (asyncpg pool): tenants, keys, the ledger, meta and budget alerts.

Same semantics as ``SQLiteStore``. Budget counters, leases and the auth epoch are not
here: ``ScaledStore`` composes this store with Redis for those. All statements are
parameterised; only the (quoted) schema name is formatted into SQL. Money is
``NUMERIC(38, 0)`` and every sum is exact (``Decimal`` -> ``int`` on read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from farebox.core.budgets import Hold
from farebox.core.records import (
    ApiKey,
    LedgerEntry,
    RequestPage,
    RequestQuery,
    Tenant,
    UsageQuery,
    UsageRow,
)
from farebox.core.tiers import tiered
from farebox.errors import Conflict, NotFound
from farebox.stores.health import Health, Prober, ProbeTimes
from farebox.stores.postgres.audit import PostgresAudit
from farebox.stores.postgres.credentials import PostgresCredentials
from farebox.stores.postgres.credits import PostgresCredits
from farebox.stores.postgres.findings import PostgresFindings
from farebox.stores.postgres.inbox import PostgresInbox
from farebox.stores.postgres.ledger_write import (
    COLUMN_TYPES,
    LedgerStatements,
    column_arrays,
    folded,
    json_rows,
)
from farebox.stores.postgres.multiplication import PostgresSightings
from farebox.stores.postgres.pausing import PostgresPauses
from farebox.stores.postgres.pool import TimedPool, keep_session, unreachable
from farebox.stores.postgres.request_log import PostgresRequestLog
from farebox.stores.postgres.responses import PostgresResponses
from farebox.stores.postgres.rollups import PostgresReports
from farebox.stores.postgres.schema import lock_key, migrate, quote_ident
from farebox.stores.postgres.traffic import PostgresTraffic
from farebox.stores.postgres.upsell import PostgresUpsell
from farebox.stores.postgres.workspaces import PostgresWorkspaces
from farebox.stores.sql import (
    KEY_COLS,
    LEDGER_COLS,
    POSTGRES,
    TENANT_COLS,
    SQLAccounts,
    check_changes,
)
from farebox.stores.tier_usage import postgres_allot
from farebox.stores.timeouts import StoreTimeouts
from farebox.stores.usage_query import POSTGRES_USAGE, usage_rows

GAP_WAIT_S = 10.0  # an outbox position missing this long was a rolled-back write, not a slow one

_JSON_DEFAULTS: dict[str, Any] = {"billing": {}, "metadata": {}, "budgets": [], "rate_limits": [],
                                   "detail": {}, "guardrails": []}  # fmt: skip
_BOOL_COLS = {"paused", "stream", "byok"}
_MONEY_COLS = ("cost", "revenue", "saved")
_GUARD = LEDGER_COLS.index("guardrails")


def _cols(cols: Sequence[str], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{c}"' for c in cols)


def _params(start: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def _encode(col: str, value: Any) -> Any:
    if col in _JSON_DEFAULTS:
        return _JSON_DEFAULTS[col] if value is None else value
    if col in _BOOL_COLS:
        return bool(value)
    return value


def _ledger_row(entry: LedgerEntry) -> list[Any]:
    row = [_encode(c, _without_nul(getattr(entry, c))) for c in LEDGER_COLS]
    # a jsonb[] array would read a list value as one more dimension: the guardrails' list
    # goes as one JSON element (orjson writes a Fragment as it is)
    row[_GUARD] = orjson.Fragment(orjson.dumps(row[_GUARD]))
    return row


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb refuse U+0000, which a client can put in ``user`` or its
    metadata: dropped, so one such entry can never fail (and so block) a ledger batch."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _entry(row: Any) -> LedgerEntry:
    data = dict(row)
    for col in _MONEY_COLS:
        data[col] = int(data[col])
    return LedgerEntry(**data)


async def _init_connection(conn: Any) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
        format="text",
    )


class PostgresStore(SQLAccounts, PostgresReports):
    dialect = POSTGRES
    key_order = "created_at, id"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_min: int = 2,
        pool_max: int = 20,
        outbox: bool = True,
        timeouts: StoreTimeouts | None = None,
    ) -> None:
        self.outbox = outbox  # record outbox positions (only needed when a sink is configured)
        self._gaps: dict[int, float] = {}  # outbox positions missing, and since when
        self._exporter_conn: Any = None
        self._dsn = dsn
        self._schema = schema
        self._s = quote_ident(schema)
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._pool_obj: Any = None
        self._timed: TimedPool | None = None
        self._timeouts = timeouts or StoreTimeouts()
        # any connection-level failure flips this down; the probe flips it up again
        self.health = Health("PostgreSQL")
        probe = self._timeouts.probe_s
        self._prober = Prober(self.health, self.ping, ProbeTimes(min(probe, 0.5), probe, probe))
        self.traffic = PostgresTraffic(lambda: self._pool, self._s)
        self.responses = PostgresResponses(lambda: self._pool, self._s)
        self.request_log = PostgresRequestLog(lambda: self._pool, self._s)
        self.credits = PostgresCredits(lambda: self._pool, self._s)
        self.inbox = PostgresInbox(lambda: self._pool, self._s)
        self.upsell = PostgresUpsell(lambda: self._pool, self._s)
        self.audit = PostgresAudit(lambda: self._pool, self._s)  # the audit log (issue 14)
        self.findings = PostgresFindings(lambda: self._pool, self._s)  # guardrails (issue 15)
        self.credentials = PostgresCredentials(lambda: self._pool, self._s)  # the vault
        self.workspaces = PostgresWorkspaces(lambda: self._pool, self._s)
        self.multiplication = PostgresSightings(lambda: self._pool, self._s)  # issue 15
        self.pauses = PostgresPauses(lambda: self._pool, self._s)  # conditional pauses
        self._ledger_sql: LedgerStatements | None = None  # built on open, from the table
        self._ledger_json: LedgerStatements | None = None  # the same, taking one JSON text

    # lifecycle -----------------------------------------------------------------
    async def open(self) -> None:
        if self._pool_obj is not None:
            return
        t = self._timeouts
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._pool_min,
            max_size=self._pool_max,
            init=_init_connection,
            reset=keep_session,  # no reset round trip on release (see ``pool.keep_session``)
            server_settings={"search_path": self._s},
            timeout=t.postgres_connect_s,  # each new connection
            command_timeout=t.postgres_command_s,  # each statement
        )
        try:
            async with pool.acquire(timeout=t.postgres_command_s) as conn:
                await migrate(conn, self._schema)
                types = await conn.fetch(COLUMN_TYPES, f"{self._s}.ledger")
            columns = {r[0]: r[1] for r in types}
            self._ledger_sql = LedgerStatements.build(self._s, columns, json=False)
            self._ledger_json = LedgerStatements.build(self._s, columns, json=True)
        except BaseException:
            pool.terminate()  # not awaited: safe even while being cancelled
            raise
        self._pool_obj = pool
        self._timed = TimedPool(pool, self.health, t.postgres_command_s)
        self.health.restore()
        self._prober.start()

    async def close(self) -> None:
        await self._prober.stop()
        pool, self._pool_obj, self._timed = self._pool_obj, None, None
        if self._exporter_conn is not None and pool is not None:
            await pool.release(self._exporter_conn)  # ends the session lock with the session
            self._exporter_conn = None
        if pool is not None:
            await pool.close()

    @property
    def _pool(self) -> TimedPool:
        if self._timed is None:
            raise RuntimeError("PostgresStore is not open")
        return self._timed

    async def ping(self) -> bool:
        """``SELECT 1`` within the probe timeout; keeps ``health`` in step with the answer."""
        pool = self._pool
        try:
            async with asyncio.timeout(self._timeouts.probe_s):
                ok = await pool.fetchval("SELECT 1") == 1
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if unreachable(exc):
                self.health.down(f"ping: {type(exc).__name__}: {exc}")
            return False
        if ok:
            self.health.restore()
        return bool(ok)

    # tenants and keys (read and updated by ``SQLAccounts``) -----------------------
    async def create_tenant(self, tenant: Tenant) -> None:
        await self._insert("tenants", TENANT_COLS, tenant, f"tenant {tenant.id!r} already exists")

    async def create_key(self, key: ApiKey) -> None:
        await self._insert("api_keys", KEY_COLS, key, f"key {key.id!r} cannot be created")

    # ledger ----------------------------------------------------------------------
    @property
    def ledger_health(self) -> Health:
        """Kept by this store: any connection-level failure flips it down, the probe up."""
        return self.health

    async def probe_write(self) -> bool:
        return await self.ping()  # not asked: the store probes its own ``health``

    def append_ledger_now(self, entries: Sequence[LedgerEntry]) -> bool:
        return False  # every write goes over the network

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Write all entries in one statement (one commit). A repeated request id is ignored,
        except that a real entry replaces an ``unsettled`` placeholder (a late settlement)."""
        await self._write_ledger(entries, replace_unsettled=True)

    async def insert_ledger_if_absent(self, entries: Sequence[LedgerEntry]) -> None:
        """Write entries whose request id is not in the ledger yet; never replace one."""
        await self._write_ledger(entries, replace_unsettled=False)

    async def _write_ledger(
        self, entries: Sequence[LedgerEntry], *, replace_unsettled: bool
    ) -> None:
        """Idempotent: an entry already recorded for real (not as ``unsettled``) is skipped,
        outbox row included, so retrying a batch whose commit was not acknowledged (the
        connection dropped after COMMIT) writes nothing twice. One statement, committed on
        its own (see ``ledger_write``)."""
        if not entries:
            return
        pool = self._pool
        kept = folded(entries, replace_unsettled=replace_unsettled)
        if tiered(kept):  # a tiered plan's revenue, in a transaction (stores/tier_usage.py)
            async with pool.acquire() as conn, conn.transaction():
                await postgres_allot(conn, self._s, kept, replace_unsettled=replace_unsettled)
                await self._ledger_statement(conn, kept, replace_unsettled)
            return
        await self._ledger_statement(pool, kept, replace_unsettled)

    async def _ledger_statement(
        self, on: Any, kept: Sequence[LedgerEntry], replace_unsettled: bool
    ) -> None:
        """The batch's one statement, on the pool (committed on its own) or a connection."""
        arrays, as_json = self._ledger_sql, self._ledger_json
        assert arrays is not None and as_json is not None  # built by ``open``, with the pool
        text = json_rows(kept)  # one JSON text, unless it cannot carry the batch exactly
        statements = arrays if text is None else as_json
        sql = statements.pick(replace_unsettled=replace_unsettled, outbox=self.outbox)
        if text is not None:
            await on.execute(sql, text)
        else:
            await on.execute(sql, *column_arrays([_ledger_row(e) for e in kept]))

    async def existing_entries(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        """The ledger entries among ``request_ids``, by request id."""
        if not request_ids:
            return {}
        sql = (
            f"SELECT {_cols(LEDGER_COLS)} FROM {self._s}.ledger WHERE request_id = ANY($1::text[])"
        )
        rows = await self._pool.fetch(sql, list(request_ids))
        return {e.request_id: e for e in map(_entry, rows)}

    async def has_data(self) -> bool:
        """Whether any tenant or ledger entry exists (the database has been served)."""
        return bool(
            await self._pool.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {self._s}.tenants) "
                f"OR EXISTS (SELECT 1 FROM {self._s}.ledger)"
            )
        )

    @property
    def label(self) -> tuple[str, str]:
        """The connection string and schema, for messages (callers strip the password)."""
        return self._dsn, self._schema

    # billing export ------------------------------------------------------------------------
    async def ledger_since(self, seq: int, limit: int) -> list[tuple[int, LedgerEntry]]:
        """Positions are a sequence, and transactions may commit out of order: a position
        missing after ``seq`` may still arrive. Only the unbroken run after ``seq`` is
        returned; a hole older than ``GAP_WAIT_S`` was a rolled-back write and is passed."""
        sql = (
            f"SELECT o.seq AS outbox_seq, {_cols(LEDGER_COLS, 'l.')} FROM {self._s}.outbox o "
            f"JOIN {self._s}.ledger l ON l.request_id = o.request_id "
            "WHERE o.seq > $1 ORDER BY o.seq LIMIT $2"
        )
        rows = await self._pool.fetch(sql, seq, limit)
        out: list[tuple[int, LedgerEntry]] = []
        expected, now = seq + 1, time.monotonic()
        for row in rows:
            position = int(row["outbox_seq"])
            while position > expected:  # a hole: wait for it, unless it is old
                first = self._gaps.setdefault(expected, now)
                if now - first < GAP_WAIT_S:
                    return out
                self._gaps.pop(expected, None)
                expected += 1
            self._gaps.pop(position, None)
            data = {k: v for k, v in dict(row).items() if k != "outbox_seq"}
            out.append((position, _entry(data)))
            expected = position + 1
        return out

    async def claim_exporter(self) -> bool:
        if self._exporter_conn is not None:
            return True
        conn = await self._pool.take()
        key = lock_key(f"exporter:{self._schema}")
        try:
            locked = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        except BaseException:
            await self._pool.give(conn)
            raise
        if locked:
            self._exporter_conn = conn  # held (with the session lock) until close
            return True
        await self._pool.give(conn)
        return False

    async def export_cursor(self, sink: str) -> int:
        value = await self._pool.fetchval(
            f"SELECT seq FROM {self._s}.export_cursors WHERE sink = $1", sink
        )
        return int(value) if value is not None else 0

    async def set_export_cursor(self, sink: str, seq: int) -> None:
        await self._pool.execute(
            f"INSERT INTO {self._s}.export_cursors(sink, seq) VALUES ($1, $2) ON CONFLICT (sink) "
            f"DO UPDATE SET seq = GREATEST({self._s}.export_cursors.seq, EXCLUDED.seq)",
            sink,
            seq,
        )

    async def add_dead_letters(self, sink: str, items: Sequence[dict[str, Any]]) -> None:
        rows = [(sink, i["key"], i["event"], i["reason"], i["at"]) for i in items]
        await self._pool.executemany(
            f"INSERT INTO {self._s}.export_dead(sink, key, event, reason, at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sink, key) DO UPDATE SET "
            "event = EXCLUDED.event, reason = EXCLUDED.reason, at = EXCLUDED.at",
            rows,
        )

    async def dead_letters(
        self, sink: str | None = None, since: int | None = None
    ) -> list[dict[str, Any]]:
        terms, params = ["TRUE"], list[Any]()
        if sink:
            params.append(sink)
            terms.append(f"sink = ${len(params)}")
        if since is not None:
            params.append(since)
            terms.append(f"(event->>'timestamp')::bigint >= ${len(params)}")
        where = f"WHERE {' AND '.join(terms)}"
        rows = await self._pool.fetch(
            f"SELECT sink, key, event, reason, at FROM {self._s}.export_dead {where} "
            "ORDER BY at, key",
            *params,
        )
        return [dict(r) for r in rows]

    async def entries_by_id(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        return await self.existing_entries(request_ids)

    async def dead_letter_count(self, sink: str | None = None) -> int:
        where, params = ("WHERE sink = $1", [sink]) if sink else ("", [])
        found = await self._pool.fetchval(
            f"SELECT count(*) FROM {self._s}.export_dead {where}", *params
        )
        return int(found)

    async def remove_dead_letters(self, sink: str, keys: Sequence[str]) -> None:
        await self._pool.execute(
            f"DELETE FROM {self._s}.export_dead WHERE sink = $1 AND key = ANY($2::text[])",
            sink,
            list(keys),
        )

    async def ledger(
        self, tenant_id: str | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        where = "tenant_id = $1" if tenant_id is not None else "TRUE"
        params: list[Any] = [tenant_id] if tenant_id is not None else []
        sql = (
            f"SELECT {_cols(LEDGER_COLS)} FROM {self._s}.ledger WHERE {where} "
            "ORDER BY started_at DESC, request_id DESC"
        )
        if limit is not None and limit >= 0:  # a negative limit is no limit, as in SQLite
            params.append(limit)
            sql += f" LIMIT ${len(params)}"
        rows = await self._pool.fetch(sql, *params)
        return [_entry(r) for r in reversed(rows)]

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        rows = await self.usage_from_rollups(query)  # where the group allows
        if rows is not None:
            return rows
        sql, params = POSTGRES_USAGE.statement(query, f"{self._s}.ledger")
        return usage_rows(await self._pool.fetch(sql, *params))

    async def requests(self, query: RequestQuery) -> RequestPage:
        return await self.request_log.page(query)

    # budget alerts -------------------------------------------------------------------
    async def record_alert(
        self, hold: Hold, threshold: int, tenant: str | None, now: float, detail: dict[str, Any]
    ) -> bool:
        """Remember a threshold alert; True only the first time per counter window."""
        inserted = await self._pool.fetchval(
            f"INSERT INTO {self._s}.budget_alerts"
            "(key, bucket, threshold, tenant_id, fired_at, detail) VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (key, bucket, threshold) DO NOTHING RETURNING TRUE",
            hold.key, hold.bucket, threshold, tenant, now, detail or {},
        )  # fmt: skip
        return inserted is True

    async def alerts(self, tenant_id: str | None) -> list[dict[str, Any]]:
        where, params = (
            ("WHERE tenant_id = $1", (tenant_id,)) if tenant_id is not None else ("", ())
        )
        rows = await self._pool.fetch(
            "SELECT key, bucket, threshold, tenant_id, fired_at, detail "
            f"FROM {self._s}.budget_alerts {where} ORDER BY fired_at, key, bucket, threshold",
            *params,
        )
        return [
            {"budget": r[0], "window_start": r[1], "threshold_percent": r[2], "tenant": r[3],
             "fired_at": r[4], **r[5]}
            for r in rows
        ]  # fmt: skip

    # meta --------------------------------------------------------------------------
    async def get_meta(self, name: str) -> str | None:
        value = await self._pool.fetchval(f"SELECT value FROM {self._s}.meta WHERE name = $1", name)
        return None if value is None else str(value)

    async def put_meta_if_absent(self, name: str, value: str) -> str:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {self._s}.meta(name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO NOTHING",
                name,
                value,
            )
            # a new statement: sees a value a concurrent transaction committed first
            stored = await conn.fetchval(f"SELECT value FROM {self._s}.meta WHERE name = $1", name)
        return str(stored)

    # helpers -----------------------------------------------------------------------
    async def _insert(self, table: str, cols: Sequence[str], record: Any, conflict: str) -> None:
        values = [_encode(c, getattr(record, c)) for c in cols]
        sql = f"INSERT INTO {self._s}.{table}({_cols(cols)}) VALUES ({_params(1, len(cols))})"
        try:
            await self._pool.execute(sql, *values)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Conflict(f"{conflict}: {exc}") from None

    async def _select(
        self,
        table: str,
        cols: Sequence[str],
        where: str,
        params: Sequence[Any],
        order: str | None = None,
    ) -> list[dict[str, Any]]:
        sql = f"SELECT {_cols(cols)} FROM {self._s}.{table} WHERE {where}"
        if order:
            sql += f" ORDER BY {order}"
        return [dict(r) for r in await self._pool.fetch(sql, *params)]

    async def _update(
        self, table: str, cols: Sequence[str], row_id: str, changes: dict[str, Any], what: str
    ) -> dict[str, Any]:
        """Apply ``changes`` and return the updated row, in one statement."""
        check_changes(cols, changes)
        names = list(changes)
        assignments = ", ".join(f'"{c}" = ${i}' for i, c in enumerate(names, start=1)) or "id = id"
        values = [_encode(c, changes[c]) for c in names] + [row_id]
        sql = (
            f"UPDATE {self._s}.{table} SET {assignments} WHERE id = ${len(values)} "
            f"RETURNING {_cols(cols)}"
        )
        try:
            row = await self._pool.fetchrow(sql, *values)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Conflict(f"{what} {row_id!r} cannot be updated: {exc}") from None
        if row is None:
            raise NotFound(f"{what} {row_id!r} not found")
        return dict(row)
