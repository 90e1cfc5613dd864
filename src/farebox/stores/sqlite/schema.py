"""SQLite schema, applied as numbered migrations recorded in ``schema_version``."""

from __future__ import annotations

import sqlite3

from farebox.stores.request_log import MAX_TAG_CHARS
from farebox.stores.sqlite.audit import MIGRATION as AUDIT_MIGRATION
from farebox.stores.sqlite.credentials import MIGRATION as CREDENTIALS_MIGRATION
from farebox.stores.sqlite.credits import MIGRATION as CREDITS_MIGRATION
from farebox.stores.sqlite.inbox import MIGRATION as INBOX_MIGRATION
from farebox.stores.sqlite.rollups import cache_migration as rollups_cache_migration
from farebox.stores.sqlite.rollups import migration as rollups_migration
from farebox.stores.sqlite.upsell import MIGRATION as UPSELL_MIGRATION
from farebox.stores.tier_usage import SQLITE_MIGRATION as TIER_USAGE_MIGRATION

# a ledger row's metadata tags, one row per tag (a string or integer as its text, a boolean as
# ``true``/``false``; nested values are not tags), read by the request log's triggers
_TAG_COLUMNS = "name, value, tenant_id, started_at, request_id"
_TAG_VALUE = (
    "CASE j.type WHEN 'text' THEN j.value WHEN 'integer' THEN CAST(j.value AS TEXT) ELSE j.type END"
)
_TAG_TYPES = (
    "j.type IN ('text', 'integer', 'true', 'false') "
    f"AND length(j.key) <= {MAX_TAG_CHARS} AND length({_TAG_VALUE}) <= {MAX_TAG_CHARS}"
)


def _tags_of(row: str, *, every_row: bool = False) -> str:
    """A SELECT of the tags of ``row`` (``new`` or ``old`` in a trigger), or, ``every_row``,
    of every ledger row (``row`` its alias)."""
    source = f"ledger {row}, " if every_row else ""
    only = f"{row}.metadata <> '{{}}' AND " if every_row else ""
    return (
        f"SELECT j.key, {_TAG_VALUE}, {row}.tenant_id, {row}.started_at, {row}.request_id "
        f"FROM {source}json_each({row}.metadata) j WHERE {only}{_TAG_TYPES}"
    )


def _add_tags(row: str, *, every_row: bool = False) -> str:
    return (
        f"INSERT OR IGNORE INTO ledger_tags({_TAG_COLUMNS}) {_tags_of(row, every_row=every_row)};"
    )


def _drop_tags(row: str) -> str:
    return f"DELETE FROM ledger_tags WHERE ({_TAG_COLUMNS}) IN ({_tags_of(row)});"


def tag_triggers() -> str:
    """The triggers that keep ``ledger_tags`` in step with the ledger, and the backfill of the
    tags of the rows already there."""
    return f"""
    CREATE TRIGGER ledger_tags_add AFTER INSERT ON ledger WHEN new.metadata <> '{{}}' BEGIN
        {_add_tags("new")}
    END;
    CREATE TRIGGER ledger_tags_drop AFTER DELETE ON ledger WHEN old.metadata <> '{{}}' BEGIN
        {_drop_tags("old")}
    END;
    CREATE TRIGGER ledger_tags_change AFTER UPDATE OF metadata, tenant_id, started_at
    ON ledger BEGIN
        {_drop_tags("old")}
        {_add_tags("new")}
    END;
    {_add_tags("l", every_row=True)}
    """


MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        plan TEXT NOT NULL,
        created_at REAL NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0,
        pause_reason TEXT,
        billing TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        tenant_id TEXT REFERENCES tenants(id),
        prefix TEXT NOT NULL DEFAULT '',
        expires_at REAL,
        revoked_at REAL,
        paused INTEGER NOT NULL DEFAULT 0,
        pause_reason TEXT
    );
    CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
    CREATE TABLE ledger (
        request_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model_requested TEXT NOT NULL,
        model_served TEXT NOT NULL,
        provider TEXT NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        user TEXT,
        feature TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        stream INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        cached_input_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_5m_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost INTEGER NOT NULL DEFAULT 0,
        revenue INTEGER NOT NULL DEFAULT 0,
        latency_ms REAL NOT NULL DEFAULT 0,
        ttft_ms REAL,
        upstream_ms REAL NOT NULL DEFAULT 0,
        usage_source TEXT NOT NULL DEFAULT 'provider',
        error_code TEXT
    );
    CREATE INDEX ledger_tenant_time ON ledger(tenant_id, started_at);
    CREATE INDEX ledger_time ON ledger(started_at);
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta(name, value) VALUES ('auth_epoch', '0');
    """,
    """
    ALTER TABLE ledger ADD COLUMN reservation_id TEXT;
    ALTER TABLE tenants ADD COLUMN budgets TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE api_keys ADD COLUMN budgets TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE budget_counters (
        key TEXT NOT NULL,
        bucket REAL NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        reserved INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key, bucket)
    );
    CREATE TABLE reservations (
        id TEXT PRIMARY KEY,
        amount INTEGER NOT NULL,
        holds TEXT NOT NULL,
        expires_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'held',
        unsettled TEXT NOT NULL
    );
    CREATE INDEX reservations_expiry ON reservations(state, expires_at);
    CREATE TABLE budget_alerts (
        key TEXT NOT NULL,
        bucket REAL NOT NULL,
        threshold INTEGER NOT NULL,
        tenant_id TEXT,
        fired_at REAL NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (key, bucket, threshold)
    );
    CREATE INDEX budget_alerts_tenant ON budget_alerts(tenant_id, fired_at);
    """,
    # reservations live for one request: keep them in one b-tree (no rowid, no extra index)
    # so that reserving and settling each write as few pages as possible
    """
    CREATE TABLE reservations_v2 (
        id TEXT PRIMARY KEY,
        amount INTEGER NOT NULL,
        holds TEXT NOT NULL,
        expires_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'held',
        unsettled TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO reservations_v2 SELECT id, amount, holds, expires_at, state, unsettled
        FROM reservations;
    DROP TABLE reservations;
    ALTER TABLE reservations_v2 RENAME TO reservations;
    """,
    # counters are read and written on every request by (key, bucket): one b-tree, no rowid
    """
    CREATE TABLE budget_counters_v2 (
        key TEXT NOT NULL,
        bucket REAL NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        reserved INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key, bucket)
    ) WITHOUT ROWID;
    INSERT INTO budget_counters_v2 SELECT key, bucket, used, reserved FROM budget_counters;
    DROP TABLE budget_counters;
    ALTER TABLE budget_counters_v2 RENAME TO budget_counters;
    """,
    """
    ALTER TABLE tenants ADD COLUMN rate_limits TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE api_keys ADD COLUMN rate_limits TEXT NOT NULL DEFAULT '[]';
    """,
    """
    CREATE TABLE breakers (
        deployment TEXT PRIMARY KEY,
        open_until REAL NOT NULL DEFAULT 0,
        probe_until REAL NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE outbox (seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL);
    CREATE TABLE export_cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE export_dead (
        sink TEXT NOT NULL,
        key TEXT NOT NULL,
        event TEXT NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (sink, key)
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE traffic (
        res INTEGER NOT NULL,
        start INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        requests INTEGER NOT NULL,
        spend INTEGER NOT NULL,
        PRIMARY KEY (res, start, tenant_id, key_id)
    ) WITHOUT ROWID;
    CREATE INDEX traffic_tenant ON traffic(res, tenant_id, start);
    CREATE TABLE anomaly_incidents (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        target TEXT NOT NULL,
        target_key TEXT NOT NULL,
        metric TEXT NOT NULL,
        observed INTEGER NOT NULL,
        baseline INTEGER NOT NULL,
        threshold INTEGER NOT NULL,
        opened_at REAL NOT NULL,
        resolved_at REAL,
        dedup_key TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX anomaly_incidents_tenant ON anomaly_incidents(tenant_id, opened_at);
    """,
    # stored Responses API answers (previous_response_id); JSON columns hold the items
    """
    CREATE TABLE stored_responses (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        model TEXT NOT NULL,
        input TEXT NOT NULL,
        output TEXT NOT NULL,
        usage TEXT NOT NULL,
        details TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX stored_responses_expiry ON stored_responses(expires_at);
    """,
    # hourly rollups of the ledger, kept by triggers (stores/rollup_rows.py)
    rollups_migration(),
    # the request log (``ReportStore.requests``, ``stores/request_log.py``): newest-first
    # keyset walks by tenant, status and time, and metadata tags in a side table that
    # triggers keep in the ledger's own transaction (nothing is written for an entry without
    # metadata); an entry's tags go with it when it is deleted (a late settlement replacing
    # its placeholder), found by their whole key (no index by request id to keep up)
    """
    DROP INDEX ledger_tenant_time;
    DROP INDEX ledger_time;
    CREATE INDEX ledger_tenant_time ON ledger(tenant_id, started_at, request_id);
    CREATE INDEX ledger_time ON ledger(started_at, request_id);
    CREATE INDEX ledger_tenant_status ON ledger(tenant_id, status, started_at, request_id)
        WHERE status <> 'ok';
    CREATE INDEX ledger_status ON ledger(status, started_at, request_id) WHERE status <> 'ok';
    CREATE TABLE ledger_tags (
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        request_id TEXT NOT NULL,
        PRIMARY KEY (name, value, tenant_id, started_at, request_id)
    ) WITHOUT ROWID;
    CREATE INDEX ledger_tags_any ON ledger_tags(name, value, started_at, request_id);
    """
    + tag_triggers(),
    # the response cache: how the cache treated a request, and what a hit saved (pico-USD)
    """
    ALTER TABLE ledger ADD COLUMN cache TEXT;
    ALTER TABLE ledger ADD COLUMN saved INTEGER NOT NULL DEFAULT 0;
    """,
    # the rollups keep the cache's sums too: saved (money) and misses (stores/rollup_rows.py)
    rollups_cache_migration(),
    # prepaid credit grants (stores/sqlite/credits.py)
    CREDITS_MIGRATION,
    # tiered plans' month-to-date usage (stores/tier_usage.py)
    TIER_USAGE_MIGRATION,
    # billing webhooks: seen events, voided upstream grants, parked grants (sqlite/inbox.py)
    INBOX_MIGRATION,
    # upsell moments and plan changes (stores/sqlite/upsell.py)
    UPSELL_MIGRATION,
    # issue 14: workspaces, key metadata and admin roles, and the ledger's workspace and byok
    """
    CREATE TABLE workspaces (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        budgets TEXT NOT NULL DEFAULT '[]',
        rate_limits TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (tenant_id, id)
    ) WITHOUT ROWID;
    ALTER TABLE api_keys ADD COLUMN workspace_id TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE api_keys ADD COLUMN alert_threshold INTEGER;
    ALTER TABLE api_keys ADD COLUMN role TEXT;
    ALTER TABLE ledger ADD COLUMN workspace TEXT;
    ALTER TABLE ledger ADD COLUMN byok INTEGER NOT NULL DEFAULT 0;
    """,
    # issue 14: the audit log, append-only and hash-chained (stores/sqlite/audit.py)
    AUDIT_MIGRATION,
    # issue 14: the provider-credential vault (stores/sqlite/credentials.py)
    CREDENTIALS_MIGRATION,
    # issue 15: what the guardrails found, per request (never the matched text); the
    # findings API reads the rows that have some
    """
    ALTER TABLE ledger ADD COLUMN guardrails TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX ledger_guardrails ON ledger(started_at, request_id) WHERE guardrails <> '[]';
    """,
    # issue 15: account multiplication: which client (an IP or a device) used which tenant's
    # key, and when last; and the one claim per client that opens its incident
    """
    CREATE TABLE multiplication_sightings (
        client TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (client, tenant_id, key_id)
    );
    CREATE INDEX multiplication_sightings_seen ON multiplication_sightings(seen_at);
    CREATE TABLE multiplication_claims (
        client TEXT PRIMARY KEY,
        claimed_at REAL NOT NULL
    );
    """,
)


def statements(script: str) -> list[str]:
    """A migration's statements: split at each ``;`` that ends a complete statement (one in
    a trigger's body does not)."""
    out, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending)
    return out


def migrate(conn: sqlite3.Connection) -> None:
    """Apply pending migrations, each in its own transaction (safe across processes)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    conn.commit()
    for number, script in enumerate(MIGRATIONS, start=1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if (row[0] or 0) >= number:
                conn.execute("ROLLBACK")
                continue
            for statement in statements(script):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version(version) VALUES (?)", (number,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
