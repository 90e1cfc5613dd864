"""Issue [13], tiered plans: a request's revenue is the month's graduated charge after it less
the charge before it, the month-to-date usage read and advanced in the ledger's transaction.
Under concurrency (one process; two SQLite stores on one file as two processes would have;
two PostgreSQL stores on one schema as two replicas; two ``farebox serve`` workers) the
month's per-request revenue sums to T(total) exactly, and boundaries are split."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from farebox.config.tiers import TieredPricing, schedule
from farebox.core.tiers import TieredEntry, TierSchedule, month_of
from tests.contracts.backends import drop_schema, make_postgres, opened
from tests.e2e import child_env, create_tenant_key, db_path, free_port, ledger_rows, running
from tests.e2e import write_config as e2e_config

TIERED = {
    "metric": "tokens",
    "included": 3000,
    # boundaries a few requests apart, so that many requests cross one mid-request; prices
    # with more than 6 decimals per 1M tokens, so a token's price is not a whole pico-USD
    "tiers": [
        {"up_to": 6000, "price": "8.0000005"},
        {"up_to": 15000, "price": "3.3333333"},
        {"price": "1.25"},
    ],
}
PLANS = {"tiered": {"models": ["*"], "pricing": {"monthly_fee_usd": "49", "tiered": TIERED}}}
MOCK = {
    "kind": "mock",
    "seed": 7,
    "latency_ms": 0,
    "output_tokens": {"distribution": "uniform", "min": 20, "max": 400},
}
SCHEDULE = schedule("tiered", TieredPricing.model_validate(TIERED))


def body(i: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"story {i}"}]}


def entry(i: int, tokens: int, tenant: str = "t", started: float = 1_793_500_000.0) -> TieredEntry:
    return TieredEntry(
        f"req_{tenant}_{i}", tenant, "k", "/v1/chat/completions", "m", "m", "p", "ok", 200,
        started, started, input_tokens=tokens // 2, output_tokens=tokens - tokens // 2,
        cost=tokens, tier_schedule=SCHEDULE,
    )  # fmt: skip


def check_month(entries: list[Any], s: TierSchedule = SCHEDULE) -> int:
    """The entries' revenue sums to T(their tokens) exactly; returns the total tokens."""
    total = sum(e.input_tokens + e.output_tokens for e in entries)
    assert sum(e.revenue for e in entries) == s.charge(total), (total, len(entries))
    assert total > 15_000  # the load reached the last tier
    return total


@pytest.mark.parametrize("backend", ["memory", "sqlite", "sqlite-single-process", "postgres"])
async def test_concurrent_batches_on_one_store_split_the_month_exactly(
    backend: str, tmp_path: Path
) -> None:
    rng = random.Random(3)
    entries = [entry(i, rng.randint(1, 900)) for i in range(120)]
    batches = [entries[i : i + rng.randint(1, 6)] for i in range(0, 120, 6)]
    async with opened(backend, tmp_path) as store:
        await asyncio.gather(*(store.append_ledger(b) for b in batches))
        await store.append_ledger(batches[0])  # a retried batch counts nothing twice
        written = await store.ledger("t")
    assert len(written) == len({e.request_id for b in batches for e in b})
    check_month(written)


async def test_two_sqlite_stores_on_one_file_split_the_month_exactly(tmp_path: Path) -> None:
    """Two connections to one database, as two worker processes have: each batch reads and
    advances the counter under the database's write lock."""
    from farebox.stores.sqlite.store import SQLiteStore

    stores = [SQLiteStore(tmp_path / "x.db"), SQLiteStore(tmp_path / "x.db")]
    for s in stores:
        await s.open()
    try:
        rng = random.Random(5)
        entries = [entry(i, rng.randint(1, 900)) for i in range(160)]
        jobs = [stores[i % 2].append_ledger(entries[i : i + 4]) for i in range(0, len(entries), 4)]
        await asyncio.gather(*jobs)
        check_month(await stores[0].ledger("t"))
    finally:
        for s in stores:
            await s.close()


async def test_two_postgres_replicas_split_the_month_exactly(tmp_path: Path) -> None:
    """Two stores (pools) on one schema, as two replicas: the counter row of the tenant's
    month is locked from its update to the ledger statement's commit."""
    first = make_postgres(tmp_path)
    await first.open()
    second = make_postgres(tmp_path, schema=first._schema)
    await second.open()
    try:
        rng = random.Random(9)
        entries = [entry(i, rng.randint(1, 900), tenant=f"t{i % 2}") for i in range(200)]
        entries += [entry(i, 500, started=1_796_500_000.0, tenant="t0") for i in range(200, 240)]
        jobs = [
            (first, second)[i % 2].append_ledger(entries[i : i + 3])
            for i in range(0, len(entries), 3)
        ]
        await asyncio.gather(*jobs)
        for tenant in ("t0", "t1"):
            rows = await first.ledger(tenant)
            for month in {month_of(e.started_at) for e in rows}:
                check_month([e for e in rows if month_of(e.started_at) == month])
    finally:
        await second.close()
        await first.close()
        await drop_schema(first._schema)


@pytest.mark.parametrize("database", ["memory", "sqlite"])
async def test_concurrent_requests_through_the_gateway(make_gateway: Any, database: str) -> None:
    config: dict[str, Any] = {"providers": {"sim": MOCK}, "plans": PLANS}
    if database == "memory":
        config["database"] = "memory"
    async with make_gateway(config) as gw:
        key = await gw.tenant_key("acme", "tiered")
        auth = {"Authorization": f"Bearer {key}"}
        answers = await asyncio.gather(
            *(gw.client.post("/v1/chat/completions", json=body(i), headers=auth) for i in range(80))
        )
        assert {r.status_code for r in answers} == {200}
        entries = await gw.ledger("acme")
    assert len(entries) == 80
    check_month(entries)
    # some request crossed a boundary: its revenue is not one tier's rate times its tokens
    assert any(e.revenue == 0 for e in entries) and any(e.revenue > 0 for e in entries)


def test_two_workers_on_sqlite_split_the_month_exactly(tmp_path: Path) -> None:
    config = e2e_config(tmp_path, providers={"sim": MOCK}, plans=PLANS)
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    started = time.monotonic()
    with running([*args, "--workers", "2"], cwd=tmp_path, env=child_env(), port=port) as server:
        key = create_tenant_key(server.base_url, "acme", "tiered")

        async def drive() -> list[int]:
            auth = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
                answers = await asyncio.gather(
                    *(client.post("/v1/chat/completions", json=body(i), headers=auth)
                      for i in range(120))
                )  # fmt: skip
                return [r.status_code for r in answers]

        assert set(asyncio.run(drive())) == {200}
    rows = ledger_rows(db_path(tmp_path), "tenant_id = ?", ("acme",))
    assert len(rows) == 120
    total = sum(int(r["input_tokens"]) + int(r["output_tokens"]) for r in rows)
    assert sum(int(r["revenue"]) for r in rows) == SCHEDULE.charge(total)
    assert total > 15_000
    assert time.monotonic() - started < 60


async def test_entries_of_other_plans_touch_no_counter(tmp_path: Path) -> None:
    """A non-tiered entry keeps its revenue and costs no statement on the tier counters."""
    import contextlib
    import sqlite3

    from tests.contracts.builders import entry as plain

    async with opened("sqlite", tmp_path) as store:
        await store.append_ledger([plain("p1", revenue=123), plain("p2", revenue=7)])
        await store.append_ledger([entry(1, 4000), plain("p3", revenue=5)])
        assert sorted(e.revenue for e in await store.ledger("acme")) == [5, 7, 123]
        [tiered] = await store.ledger("t")
        assert tiered.revenue == SCHEDULE.charge(4000) > 0
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db")) as db:
        rows = db.execute("SELECT tenant_id, month, used FROM tier_usage").fetchall()
    assert rows == [("t", "2026-11", 4000)]


def test_a_revenue_hold_on_a_tiered_plan_covers_what_it_may_earn() -> None:
    """A revenue budget (or balance) holds the request's worst case: every unit at the
    dearest tier (found by the review: it held the cost)."""
    from farebox.core.plans import RevenueRule
    from farebox.core.usage import Usage

    rule = RevenueRule(tiered=SCHEDULE)
    for tokens in (1, 500, 2999, 3000, 10**6):
        usage = Usage(input_tokens=tokens // 2, output_tokens=tokens - tokens // 2)
        assert rule.worst(1000, tokens // 2, tokens - tokens // 2) >= rule.revenue(usage, 1000)


async def test_single_process_store_stores_a_revenue_counters_exact_spend(tmp_path: Path) -> None:
    """The stored revenue counter gets the allotted revenue, as the in-memory one does (found
    by the review: it stored the upper bound, so a restart refused the tenant early)."""
    from farebox.core.budgets import Hold
    from farebox.core.records import Reservation
    from tests.contracts.backends import opened

    held = Hold(key="tenant:t:month:revenue", scope="tenant", period="month", name=None,
                limit=10**18, bucket=0.0, buckets_from=0.0, resets_at=2e9, base_limit=10**18,
                unit="revenue", tenant="t")  # fmt: skip
    async with opened("sqlite-single-process", tmp_path) as store:
        e = entry(1, 2000)  # inside the 3000-token allowance: exact revenue 0
        e.reservation_id = "rsv_1"
        e.revenue = SCHEDULE.at_most(2000)  # what the request path sets before the store allots
        placeholder = entry(1, 0)
        placeholder.status = "unsettled"
        assert (await store.reserve(Reservation("rsv_1", 0, (held,), 2e9, placeholder, 0,
                                                e.revenue))).ok  # fmt: skip
        await store.append_ledger([e])
        assert e.revenue == 0
        (state,) = await store.budget_states([held])
        assert state.used == 0 and state.reserved == 0
        assert stored_used(tmp_path, held.key) == 0


def stored_used(directory: Path, key: str) -> int:
    """A counter's spend as the SQLite files under ``directory`` keep it."""
    import contextlib
    import sqlite3

    total = 0
    for path in directory.rglob("*.db"):
        with contextlib.closing(sqlite3.connect(path)) as db:
            with contextlib.suppress(sqlite3.OperationalError):
                for (used,) in db.execute("SELECT used FROM budget_counters WHERE key = ?", (key,)):
                    total += int(used)
    return total
