"""Issue 14, acceptance 5 on PostgreSQL: two stores on one schema (two replicas) appending at
once make one unbroken chain; an edited row and a deleted row are named by the verify."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from farebox.core.audit import AuditEntry
from farebox.identity.audit import AuditLog, Break
from tests.contracts.backends import PG_DSN, drop_schema, make_postgres


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    schema = f"farebox_audit_{uuid.uuid4().hex[:12]}"
    one, two = make_postgres(tmp_path, schema), make_postgres(tmp_path, schema)
    await one.open()
    await two.open()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()
        await drop_schema(schema)


def entry(n: int, actor: str) -> AuditEntry:
    return AuditEntry(actor, "owner", "PATCH /tenants/{tenant_id}", "tenant:acme",
                      {"before": {"n": n - 1}, "after": {"n": n}, "request": {"token": "t" * 20}},
                      "10.0.0.1", f"req_{actor}_{n}", "ok", 200)  # fmt: skip


async def execute(schema: str, sql: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(sql.replace("{s}", f'"{schema}"'))
    finally:
        await conn.close()


async def test_replicas_share_one_chain_and_tampering_is_named(replicas: tuple[Any, Any]) -> None:
    one, two = replicas
    logs = [AuditLog(s.audit, lambda: 1_800_000_000.5) for s in (one, two)]
    await asyncio.gather(*(logs[n % 2].record(entry(n, f"r{n % 2}")) for n in range(60)))
    assert await logs[1].verify() == (60, None)
    seqs = [r.seq for r in await one.audit.scan(0, 100)]
    assert seqs == list(range(1, 61))
    schema = one._schema
    await execute(schema, """UPDATE {s}.audit_log SET change = '{"forged":true}' WHERE seq = 17""")
    count, broken = await logs[0].verify()
    assert broken == Break(17, "hash mismatch: the record was edited") and count == 17
    await execute(schema, "DELETE FROM {s}.audit_log WHERE seq IN (17, 18)")
    _, broken = await logs[0].verify()
    assert broken is not None and broken.seq == 17 and broken.reason.startswith("missing")
