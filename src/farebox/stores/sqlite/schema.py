"""SQLite schema, applied as numbered migrations recorded in ``schema_version``."""

from __future__ import annotations

import sqlite3

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
    # the request log (``ReportStore.requests``, ``stores/request_log.py``): newest-first
    # keyset walks by tenant, status and time, and metadata tags in a side table that
    # triggers keep in the ledger's own transaction (nothing is written for an entry without
    # metadata); an entry's tags go with it when it is deleted (a late settlement replacing
    # its placeholder)
    """
    DROP INDEX ledger_tenant_time;
    DROP INDEX ledger_time;
    CREATE INDEX ledger_tenant_time ON ledger(tenant_id, started_at, request_id);
    CREATE INDEX ledger_time ON ledger(started_at, request_id);
    CREATE INDEX ledger_tenant_status ON ledger(tenant_id, status, started_at, request_id);
    CREATE INDEX ledger_status ON ledger(status, started_at, request_id);
    CREATE TABLE ledger_tags (
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        request_id TEXT NOT NULL,
        PRIMARY KEY (name, value, tenant_id, started_at, request_id)
    ) WITHOUT ROWID;
    CREATE INDEX ledger_tags_any ON ledger_tags(name, value, started_at, request_id);
    CREATE INDEX ledger_tags_entry ON ledger_tags(request_id);
    CREATE TRIGGER ledger_tags_add AFTER INSERT ON ledger WHEN new.metadata <> '{}' BEGIN
        INSERT OR IGNORE INTO ledger_tags(name, value, tenant_id, started_at, request_id)
        SELECT j.key, CASE j.type WHEN 'text' THEN j.value WHEN 'integer'
            THEN CAST(j.value AS TEXT) ELSE j.type END,
            new.tenant_id, new.started_at, new.request_id
        FROM json_each(new.metadata) j WHERE j.type IN ('text', 'integer', 'true', 'false');
    END;
    CREATE TRIGGER ledger_tags_drop AFTER DELETE ON ledger WHEN old.metadata <> '{}' BEGIN
        DELETE FROM ledger_tags WHERE request_id = old.request_id;
    END;
    CREATE TRIGGER ledger_tags_change AFTER UPDATE OF metadata, tenant_id, started_at
    ON ledger BEGIN
        DELETE FROM ledger_tags WHERE request_id = old.request_id;
        INSERT OR IGNORE INTO ledger_tags(name, value, tenant_id, started_at, request_id)
        SELECT j.key, CASE j.type WHEN 'text' THEN j.value WHEN 'integer'
            THEN CAST(j.value AS TEXT) ELSE j.type END,
            new.tenant_id, new.started_at, new.request_id
        FROM json_each(new.metadata) j WHERE j.type IN ('text', 'integer', 'true', 'false');
    END;
    INSERT OR IGNORE INTO ledger_tags(name, value, tenant_id, started_at, request_id)
    SELECT j.key, CASE j.type WHEN 'text' THEN j.value WHEN 'integer'
        THEN CAST(j.value AS TEXT) ELSE j.type END,
        l.tenant_id, l.started_at, l.request_id
    FROM ledger l, json_each(l.metadata) j
    WHERE l.metadata <> '{}' AND j.type IN ('text', 'integer', 'true', 'false');
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
