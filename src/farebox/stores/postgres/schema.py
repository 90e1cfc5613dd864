"""PostgreSQL schema, applied as numbered migrations recorded in ``schema_version``.

Migrations run in one transaction that first takes a transaction-scoped advisory lock, so
replicas starting at once apply each migration exactly once: the others wait for the lock,
then find the work done. DDL is transactional in PostgreSQL, so a failed migration leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
from typing import Any

from farebox.stores.postgres.audit import MIGRATION as AUDIT_MIGRATION
from farebox.stores.postgres.credentials import MIGRATION as CREDENTIALS_MIGRATION
from farebox.stores.postgres.credits import MIGRATION as CREDITS_MIGRATION
from farebox.stores.postgres.inbox import MIGRATION as INBOX_MIGRATION
from farebox.stores.postgres.rollups import cache_migration as rollups_cache_migration
from farebox.stores.postgres.rollups import migration as rollups_migration
from farebox.stores.postgres.upsell import MIGRATION as UPSELL_MIGRATION
from farebox.stores.tier_usage import POSTGRES_MIGRATION as TIER_USAGE_MIGRATION

SCHEMA_MARK = "{s}"  # replaced by the quoted schema name (str.format would trip on '{}')

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.tenants (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        plan TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        paused BOOLEAN NOT NULL DEFAULT FALSE,
        pause_reason TEXT,
        billing JSONB NOT NULL DEFAULT '{}',
        metadata JSONB NOT NULL DEFAULT '{}',
        budgets JSONB NOT NULL DEFAULT '[]'
    );
    CREATE TABLE {s}.api_keys (
        id TEXT COLLATE "C" PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        tenant_id TEXT COLLATE "C" REFERENCES {s}.tenants(id),
        prefix TEXT NOT NULL DEFAULT '',
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        paused BOOLEAN NOT NULL DEFAULT FALSE,
        pause_reason TEXT,
        budgets JSONB NOT NULL DEFAULT '[]'
    );
    CREATE INDEX api_keys_tenant ON {s}.api_keys(tenant_id, created_at);
    CREATE TABLE {s}.ledger (
        request_id TEXT COLLATE "C" PRIMARY KEY,
        tenant_id TEXT COLLATE "C" NOT NULL,
        key_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model_requested TEXT NOT NULL,
        model_served TEXT NOT NULL,
        provider TEXT NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION NOT NULL,
        "user" TEXT,
        feature TEXT,
        metadata JSONB NOT NULL DEFAULT '{}',
        stream BOOLEAN NOT NULL DEFAULT FALSE,
        input_tokens BIGINT NOT NULL DEFAULT 0,
        cached_input_tokens BIGINT NOT NULL DEFAULT 0,
        cache_write_5m_tokens BIGINT NOT NULL DEFAULT 0,
        cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        reasoning_tokens BIGINT NOT NULL DEFAULT 0,
        cost NUMERIC(38, 0) NOT NULL DEFAULT 0,
        revenue NUMERIC(38, 0) NOT NULL DEFAULT 0,
        latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
        ttft_ms DOUBLE PRECISION,
        upstream_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
        usage_source TEXT NOT NULL DEFAULT 'provider',
        error_code TEXT,
        reservation_id TEXT
    );
    CREATE INDEX ledger_tenant_time ON {s}.ledger(tenant_id, started_at, request_id);
    CREATE INDEX ledger_time ON {s}.ledger(started_at, request_id);
    CREATE TABLE {s}.meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE {s}.budget_alerts (
        key TEXT NOT NULL,
        bucket DOUBLE PRECISION NOT NULL,
        threshold INTEGER NOT NULL,
        tenant_id TEXT,
        fired_at DOUBLE PRECISION NOT NULL,
        detail JSONB NOT NULL DEFAULT '{}',
        PRIMARY KEY (key, bucket, threshold)
    );
    CREATE INDEX budget_alerts_tenant ON {s}.budget_alerts(tenant_id, fired_at);
    """,
    """
    ALTER TABLE {s}.tenants ADD COLUMN rate_limits JSONB NOT NULL DEFAULT '[]';
    ALTER TABLE {s}.api_keys ADD COLUMN rate_limits JSONB NOT NULL DEFAULT '[]';
    """,
    """
    CREATE TABLE {s}.outbox (seq BIGSERIAL PRIMARY KEY, request_id TEXT NOT NULL);
    CREATE TABLE {s}.export_cursors (sink TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    CREATE TABLE {s}.export_dead (
        sink TEXT NOT NULL,
        key TEXT NOT NULL,
        event JSONB NOT NULL,
        reason TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (sink, key)
    );
    """,
    """
    CREATE TABLE {s}.traffic (
        res INTEGER NOT NULL,
        start BIGINT NOT NULL,
        tenant_id TEXT COLLATE "C" NOT NULL,
        key_id TEXT COLLATE "C" NOT NULL,
        requests BIGINT NOT NULL,
        spend BIGINT NOT NULL,
        PRIMARY KEY (res, start, tenant_id, key_id)
    );
    CREATE INDEX traffic_tenant ON {s}.traffic(res, tenant_id, start);
    CREATE TABLE {s}.anomaly_incidents (
        id TEXT PRIMARY KEY,
        tenant_id TEXT COLLATE "C" NOT NULL,
        key_id TEXT NOT NULL,
        target TEXT NOT NULL,
        target_key TEXT NOT NULL,
        metric TEXT NOT NULL,
        observed BIGINT NOT NULL,
        baseline BIGINT NOT NULL,
        threshold BIGINT NOT NULL,
        opened_at DOUBLE PRECISION NOT NULL,
        resolved_at DOUBLE PRECISION,
        dedup_key TEXT NOT NULL,
        detail JSONB NOT NULL DEFAULT '{}'
    );
    CREATE INDEX anomaly_incidents_tenant ON {s}.anomaly_incidents(tenant_id, opened_at);
    """,
    # stored Responses API answers (previous_response_id)
    """
    CREATE TABLE {s}.stored_responses (
        id TEXT COLLATE "C" PRIMARY KEY,
        tenant_id TEXT COLLATE "C" NOT NULL,
        model TEXT NOT NULL,
        input JSONB NOT NULL,
        output JSONB NOT NULL,
        usage JSONB NOT NULL,
        details JSONB NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX stored_responses_expiry ON {s}.stored_responses(expires_at);
    """,
    # hourly rollups of the ledger, kept by triggers (stores/rollup_rows.py)
    rollups_migration(SCHEMA_MARK),
    # the request log (``ReportStore.requests``, ``stores/request_log.py``): newest-first
    # keyset walks by tenant and status, and metadata tags in a side table that a trigger
    # keeps in the ledger's own statement (its WHEN skips entries without metadata); a late
    # settlement replacing its placeholder (``ON CONFLICT DO UPDATE``) replaces its tags, the
    # old ones found by their whole key (no index by request id to keep up)
    """
    CREATE INDEX ledger_tenant_status ON {s}.ledger(tenant_id, status, started_at, request_id)
        WHERE status <> 'ok';
    CREATE INDEX ledger_status ON {s}.ledger(status, started_at, request_id) WHERE status <> 'ok';
    CREATE TABLE {s}.ledger_tags (
        name TEXT COLLATE "C" NOT NULL,
        value TEXT COLLATE "C" NOT NULL,
        tenant_id TEXT COLLATE "C" NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        request_id TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (name, value, tenant_id, started_at, request_id)
    );
    CREATE INDEX ledger_tags_any ON {s}.ledger_tags(name, value, started_at, request_id);
    CREATE FUNCTION {s}.ledger_tags_sync() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            DELETE FROM {s}.ledger_tags t USING jsonb_each(OLD.metadata) j
            WHERE t.name = j.key AND t.value = j.value #>> '{}' AND t.tenant_id = OLD.tenant_id
              AND t.started_at = OLD.started_at AND t.request_id = OLD.request_id;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO {s}.ledger_tags(name, value, tenant_id, started_at, request_id)
            SELECT j.key, j.value #>> '{}', NEW.tenant_id, NEW.started_at, NEW.request_id
            FROM jsonb_each(NEW.metadata) j
            WHERE (jsonb_typeof(j.value) IN ('string', 'boolean')
               OR (jsonb_typeof(j.value) = 'number' AND j.value::text ~ '^-?[0-9]+$'))
              AND length(j.key) <= 64 AND length(j.value #>> '{}') <= 64  -- MAX_TAG_CHARS
            ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER ledger_tags_add AFTER INSERT ON {s}.ledger FOR EACH ROW
        WHEN (NEW.metadata <> '{}'::jsonb) EXECUTE FUNCTION {s}.ledger_tags_sync();
    CREATE TRIGGER ledger_tags_change AFTER UPDATE ON {s}.ledger FOR EACH ROW
        WHEN (OLD.metadata <> '{}'::jsonb OR NEW.metadata <> '{}'::jsonb)
        EXECUTE FUNCTION {s}.ledger_tags_sync();
    CREATE TRIGGER ledger_tags_drop AFTER DELETE ON {s}.ledger FOR EACH ROW
        WHEN (OLD.metadata <> '{}'::jsonb) EXECUTE FUNCTION {s}.ledger_tags_sync();
    INSERT INTO {s}.ledger_tags(name, value, tenant_id, started_at, request_id)
    SELECT j.key, j.value #>> '{}', l.tenant_id, l.started_at, l.request_id
    FROM {s}.ledger l, jsonb_each(l.metadata) j
    WHERE l.metadata <> '{}'::jsonb AND (jsonb_typeof(j.value) IN ('string', 'boolean')
        OR (jsonb_typeof(j.value) = 'number' AND j.value::text ~ '^-?[0-9]+$'))
      AND length(j.key) <= 64 AND length(j.value #>> '{}') <= 64
    ON CONFLICT DO NOTHING;
    """,
    # the response cache: how the cache treated a request, and what a hit saved (pico-USD)
    """
    ALTER TABLE {s}.ledger ADD COLUMN cache TEXT;
    ALTER TABLE {s}.ledger ADD COLUMN saved NUMERIC(38, 0) NOT NULL DEFAULT 0;
    """,
    # the rollups keep the cache's sums too: saved (money) and misses (stores/rollup_rows.py)
    rollups_cache_migration(SCHEMA_MARK),
    # prepaid credit grants (stores/postgres/credits.py)
    CREDITS_MIGRATION,
    # tiered plans' month-to-date usage (stores/tier_usage.py)
    TIER_USAGE_MIGRATION,
    # billing webhooks: seen events, voided upstream grants, parked grants (postgres/inbox.py)
    INBOX_MIGRATION,
    # upsell moments and plan changes (stores/postgres/upsell.py)
    UPSELL_MIGRATION,
    # issue 14: workspaces, key metadata and admin roles, and the ledger's workspace and byok
    """
    CREATE TABLE {s}.workspaces (
        tenant_id TEXT COLLATE "C" NOT NULL,
        id TEXT COLLATE "C" NOT NULL,
        name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        budgets JSONB NOT NULL DEFAULT '[]',
        rate_limits JSONB NOT NULL DEFAULT '[]',
        metadata JSONB NOT NULL DEFAULT '{}',
        PRIMARY KEY (tenant_id, id)
    );
    ALTER TABLE {s}.api_keys ADD COLUMN workspace_id TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE {s}.api_keys ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}';
    ALTER TABLE {s}.api_keys ADD COLUMN alert_threshold INTEGER;
    ALTER TABLE {s}.api_keys ADD COLUMN role TEXT;
    ALTER TABLE {s}.ledger ADD COLUMN workspace TEXT;
    ALTER TABLE {s}.ledger ADD COLUMN byok BOOLEAN NOT NULL DEFAULT FALSE;
    """,
    # issue 14: the audit log, append-only and hash-chained (stores/postgres/audit.py)
    AUDIT_MIGRATION,
    # issue 14: the provider-credential vault (stores/postgres/credentials.py)
    CREDENTIALS_MIGRATION,
    # issue 15: what the guardrails found, per request (never the matched text)
    """
    ALTER TABLE {s}.ledger ADD COLUMN guardrails JSONB NOT NULL DEFAULT '[]';
    CREATE INDEX ledger_guardrails ON {s}.ledger(started_at, request_id)
        WHERE guardrails <> '[]'::jsonb;
    """,
    # issue 15: account multiplication: which client (an IP or a device) used which tenant's
    # key, and when last; and the one claim per client that opens its incident
    """
    CREATE TABLE {s}.multiplication_sightings (
        client TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (client, tenant_id, key_id)
    );
    CREATE INDEX multiplication_sightings_seen ON {s}.multiplication_sightings(seen_at);
    CREATE TABLE {s}.multiplication_claims (
        client TEXT PRIMARY KEY,
        claimed_at DOUBLE PRECISION NOT NULL
    );
    """,
)


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted (schema names are not parameters)."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid PostgreSQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory lock id for migrating ``schema``."""
    digest = hashlib.blake2b(f"farebox:migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def migrate(conn: Any, schema: str) -> int:
    """Create ``schema`` if needed and apply pending migrations; return the version."""
    s = quote_ident(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {s}")
        if await conn.fetchval("SELECT to_regclass($1)", f"{s}.schema_version") is None:
            await conn.execute(
                f"CREATE TABLE {s}.schema_version ("
                "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
        current = int(
            await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {s}.schema_version")
        )
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= current:
                continue
            await conn.execute(script.replace(SCHEMA_MARK, s))
            await conn.execute(
                f"INSERT INTO {s}.schema_version(version, applied_at) "
                "VALUES ($1, extract(epoch FROM clock_timestamp()))",
                number,
            )
            current = number
    return current
