"""The request log's queries walk an index on a big ledger (SQLite and PostgreSQL): a tenant's
page, a status page and a tag page read the few rows they return, never the whole ledger and
never a sort of it."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

from farebox.core.records import LedgerEntry, RequestQuery
from farebox.stores.request_log import encode_cursor
from farebox.stores.sqlite.store import SQLiteStore
from tests.contracts.backends import PG_DSN, drop_schema, require
from tests.contracts.builders import T0, entry

ENTRIES = 20_000
QUERIES = {
    "tenant": RequestQuery(tenant_id="t7"),
    "tenant+status": RequestQuery(tenant_id="t7", status="error"),
    "status": RequestQuery(status="error"),
    "tenant+tag": RequestQuery(tenant_id="t7", tag=("team", "red")),
    "tag": RequestQuery(tag=("team", "red")),
    "tag+time": RequestQuery(tag=("team", "red"), start=T0 + 100, end=T0 + 5_000),
    "tenant+tag, next page": RequestQuery(
        tenant_id="t7",
        tag=("team", "red"),
        cursor=encode_cursor(entry("r5000", started_at=T0 + 9_000)),
    ),
}


def ledger() -> list[LedgerEntry]:
    """A ledger of many tenants, where one tag in fifty entries is rare and the rest common."""
    rng = random.Random(3)
    rows = []
    for i in range(ENTRIES):
        meta = {"team": "red" if i % 50 == 1 else "blue", "env": "prod"} if i % 2 else {}
        status = "error" if i % 40 == 0 else "ok"
        rows.append(entry(f"r{i:05d}", tenant_id=f"t{rng.randrange(20)}", status=status,
                          started_at=T0 + i, metadata=meta))  # fmt: skip
    return rows


async def test_sqlite_pages_walk_indexes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "big.db")
    await store.open()
    try:
        rows = ledger()
        for i in range(0, len(rows), 5_000):
            await store.append_ledger(rows[i : i + 5_000])
        await store._run(lambda: store._db.execute("ANALYZE"))  # the planner sees the skew
        for name, query in QUERIES.items():
            steps = store.request_log.plan(query)
            text = " | ".join(steps)
            assert not any(s.startswith("SCAN") for s in steps), (name, text)
            assert "TEMP B-TREE" not in text, (name, text)  # no sort: the index is the order
            if query.tag is not None:
                assert "ledger_tags" in text or "USING PRIMARY KEY" in text, (name, text)
            page = await store.requests(query)
            assert page.entries and all(e.tenant_id == (query.tenant_id or e.tenant_id)
                                        for e in page.entries)  # fmt: skip
    finally:
        await store.close()


async def test_postgres_pages_walk_indexes() -> None:
    require("PostgreSQL request-log plans", ("PostgreSQL", 5432))
    from farebox.stores.postgres.store import PostgresStore

    schema = f"farebox_reqlog_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(PG_DSN, schema=schema, pool_min=1, pool_max=2)
    await store.open()
    try:
        rows = ledger()
        for i in range(0, len(rows), 5_000):
            await store.append_ledger(rows[i : i + 5_000])
        await store._pool.execute(f'ANALYZE "{schema}".ledger, "{schema}".ledger_tags')
        for name, query in QUERIES.items():
            plan = await explain(store, query)
            assert "Seq Scan" not in plan, (name, plan)
            # (a sort of the few rows an index found is the planner's right choice here)
            if query.tag is not None:
                assert "Index" in plan and "ledger_tags" in plan, (name, plan)
            assert (await store.requests(query)).entries, name
    finally:
        await store.close()
        await drop_schema(schema)


async def explain(store: Any, query: RequestQuery) -> str:
    sql, params = store.request_log.statement(query)
    rows = await store._pool.fetch("EXPLAIN " + sql, *params)
    return "\n".join(r[0] for r in rows)
