"""Guardrail findings in PostgreSQL (the ``FindingsStore`` role, ``stores.findings``).

Pages and counts are one statement each on a pooled connection, over the ledger's partial
index ``ledger_guardrails`` (only the entries with findings); a finding filter is JSONB
containment (``guardrails @> '[{"detector": ...}]'``: some finding has those fields). A tally
takes a transaction-scoped advisory lock named after the schema and the subject, adds to its
minute cell and sums the hour: every process and replica tallying that subject waits its turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from farebox.stores.findings import (
    MAX_GROUPS,
    FindingCount,
    FindingsPage,
    FindingsQuery,
    minute_of,
    ordered,
    page_of,
    row_of,
    window_floor,
)
from farebox.stores.findings import (
    page_statement as shared_page_statement,
)
from farebox.stores.sql import POSTGRES

MIGRATION = """
CREATE TABLE {s}.guardrail_tallies (
    subject TEXT COLLATE "C" NOT NULL,
    minute BIGINT NOT NULL,
    findings BIGINT NOT NULL,
    PRIMARY KEY (subject, minute)
);
CREATE INDEX guardrail_tallies_minute ON {s}.guardrail_tallies(minute);
"""


def tally_lock(schema: str, subject: str) -> int:
    """A stable signed 64-bit advisory lock id for tallying ``subject`` in ``schema``."""
    digest = hashlib.blake2b(f"farebox:guardrails:{schema}:{subject}".encode(),
                             digest_size=8).digest()  # fmt: skip
    return int.from_bytes(digest, "big", signed=True)


def page_statement(prefix: str, query: FindingsQuery) -> tuple[str, list[Any]]:
    """The SELECT of one page and its parameters; ``prefix``: the quoted schema and a dot.
    A finding filter is JSONB containment."""
    return shared_page_statement(
        query,
        POSTGRES,
        f"{prefix}ledger l",
        "l.guardrails <> '[]'::jsonb",
        lambda wanted, mark: f"l.guardrails @> {mark([wanted])}::jsonb",
    )


class PostgresFindings:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        self._schema = schema  # quoted
        self._prefix = f"{schema}."

    async def page(self, query: FindingsQuery) -> FindingsPage:
        sql, params = page_statement(self._prefix, query)
        rows = await self._pool().fetch(sql, *params)
        return page_of([row_of(tuple(r)) for r in rows], query.limit)

    async def counts(self, tenant_id: str | None, start: float, end: float) -> list[FindingCount]:
        tenant = "AND l.tenant_id = $4 " if tenant_id is not None else ""
        sql = (
            "SELECT l.tenant_id, COALESCE(f->>'detector', ''), COALESCE(f->>'category', ''), "
            "COALESCE(f->>'action', ''), COUNT(*), COUNT(DISTINCT l.request_id) "
            f"FROM {self._prefix}ledger l CROSS JOIN LATERAL jsonb_array_elements("
            "CASE WHEN jsonb_typeof(l.guardrails) = 'array' THEN l.guardrails ELSE '[]' END) f "
            f"WHERE l.guardrails <> '[]'::jsonb AND l.started_at >= $1 AND l.started_at < $2 "
            f"{tenant}GROUP BY 1, 2, 3, 4 LIMIT $3"
        )
        params: list[Any] = [start, end, MAX_GROUPS]
        if tenant_id is not None:
            params.append(tenant_id)
        rows = await self._pool().fetch(sql, *params)
        return ordered(FindingCount(str(t), str(d), str(c), str(a), int(n), int(r))
                       for t, d, c, a, n, r in rows)  # fmt: skip

    async def tally(self, subject: str, at: float, findings: int) -> tuple[int, int]:
        p, floor = self._prefix, window_floor(at)
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", tally_lock(p, subject))
            await conn.execute(
                f"INSERT INTO {p}guardrail_tallies(subject, minute, findings) "
                "VALUES ($1, $2, $3) ON CONFLICT (subject, minute) DO UPDATE SET "
                f"findings = {p}guardrail_tallies.findings + excluded.findings",
                subject, minute_of(at), findings,
            )  # fmt: skip
            await conn.execute(
                f"DELETE FROM {p}guardrail_tallies WHERE subject = $1 AND minute < $2",
                subject, floor,
            )  # fmt: skip
            after = int(await conn.fetchval(
                f"SELECT COALESCE(SUM(findings), 0) FROM {p}guardrail_tallies "
                "WHERE subject = $1 AND minute >= $2", subject, floor,
            ))  # fmt: skip
        return after - findings, after

    async def prune(self, before: float) -> None:
        await self._pool().execute(
            f"DELETE FROM {self._prefix}guardrail_tallies WHERE minute < $1", int(before)
        )
