"""The month-to-date usage of tiered plans, as the stores keep it: one counter per tenant and
month (``tier_usage``), read and advanced in the transaction that writes the entries, so the
entries' revenue (``farebox.core.tiers``) splits tier boundaries exactly under any
concurrency. Entries without a tier schedule cost nothing here (no statement).

SQLite: the write transaction holds the database's write lock, so the read and the update
are atomic across processes. PostgreSQL: one ``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``
per tenant and month locks its row until the ledger statement commits (rows taken in key
order, so two replicas never deadlock on them).

An entry already in the ledger (a retried batch; not an ``unsettled`` placeholder it
replaces) is not counted again: the ledger ignores it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from farebox.core.records import LedgerEntry
from farebox.core.tiers import TieredEntry, allot, groups, tiered

SQLITE_MIGRATION = """
CREATE TABLE tier_usage (
    tenant_id TEXT NOT NULL,
    month TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
) WITHOUT ROWID;
"""
POSTGRES_MIGRATION = """
CREATE TABLE {s}.tier_usage (
    tenant_id TEXT COLLATE "C" NOT NULL,
    month TEXT COLLATE "C" NOT NULL,
    used NUMERIC(38, 0) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
);
"""
_SQLITE_ADD = (
    "INSERT INTO tier_usage(tenant_id, month, used) VALUES (?, ?, ?) "
    "ON CONFLICT(tenant_id, month) DO UPDATE SET used = used + excluded.used RETURNING used"
)


def fresh(entries: Sequence[LedgerEntry], written: Collection[str]) -> list[TieredEntry]:
    """The tiered entries the ledger will take: not one already ``written`` (by request id),
    nor a repeat of an earlier one in the batch."""
    seen = set(written)
    out = []
    for e in tiered(entries):
        if e.request_id not in seen:
            seen.add(e.request_id)
            out.append(e)
    return out


def memory_allot(usage: dict[tuple[str, str], int], entries: list[TieredEntry]) -> None:
    """Set the entries' revenue from, and advance, the in-process counters."""
    for key, group in groups(entries).items():
        usage[key] = allot(group, usage.get(key, 0))


def sqlite_allot(db: sqlite3.Connection, entries: Sequence[LedgerEntry]) -> bool:
    """In the ledger's write transaction: set the tiered entries' revenue and advance their
    months' counters; whether there were any (the caller then makes its rows again)."""
    candidates = tiered(entries)
    if not candidates:
        return False
    ids = [e.request_id for e in candidates]
    marks = ",".join("?" * len(ids))
    written = {
        r[0]
        for r in db.execute(
            f"SELECT request_id FROM ledger WHERE request_id IN ({marks}) "
            "AND status <> 'unsettled'",
            ids,
        )
    }
    for (tenant, month), group in groups(fresh(entries, written)).items():
        used = sum(e.tier_units() for e in group)
        (after,) = db.execute(_SQLITE_ADD, (tenant, month, used)).fetchone()
        allot(group, int(after) - used)
    return True


async def postgres_allot(
    conn: Any, schema: str, entries: Sequence[LedgerEntry], *, replace_unsettled: bool
) -> None:
    """In the ledger statement's transaction on ``conn`` (asyncpg): set the tiered entries'
    revenue, each month's counter row locked (in key order) until the commit."""
    candidates = tiered(entries)
    if not candidates:
        return
    ids = [e.request_id for e in candidates]
    skip = "AND status <> 'unsettled'" if replace_unsettled else ""
    rows = await conn.fetch(
        f"SELECT request_id FROM {schema}.ledger WHERE request_id = ANY($1::text[]) {skip}", ids
    )
    add = (
        f"INSERT INTO {schema}.tier_usage(tenant_id, month, used) VALUES ($1, $2, $3) "
        "ON CONFLICT (tenant_id, month) DO UPDATE SET used = tier_usage.used + EXCLUDED.used "
        "RETURNING used"
    )
    for (tenant, month), group in groups(fresh(entries, {r[0] for r in rows})).items():
        used = sum(e.tier_units() for e in group)
        after = await conn.fetchval(add, tenant, month, used)
        allot(group, int(after) - used)
