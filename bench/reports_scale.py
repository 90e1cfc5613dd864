"""Reports at scale (issue [11], acceptance 7 and 8, the store's side): load a ledger of many
tenants and entries into SQLite or PostgreSQL through the store's own ledger write (so the
rollup triggers run as in production), then time the reports that read the rollups: top
spenders of the month, the month's spend by day, margins' usage by tenant, reconciliation's
ledger totals, and the usage of one tenant; with the peak of Python memory each took.

    python -m bench.reports_scale --entries 5000000 --tenants 2000 --backend sqlite
    python -m bench.reports_scale --entries 5000000 --tenants 2000 --backend postgres \
        --dsn postgresql://postgres@127.0.0.1:5432/test

Not a timed test: it prints the numbers (each report should answer in under 500 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from farebox.billing.reconcile import ledger_totals
from farebox.core.records import LedgerEntry, SeriesQuery, UsageQuery
from farebox.observe.reports import Reports

MONTH_START = 1_793_491_200.0  # 2026-11-01T00:00:00Z
MONTH_S = 30 * 86_400
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-haiku", "text-embedding-3-small")
FEATURES = (None, "chat", "search", "summaries")
BATCH = 10_000


def entries(count: int, tenants: int, seed: int = 7) -> Any:
    """``count`` entries over the month, in batches, spread over ``tenants`` tenants (a few
    of them much bigger than the rest, as in life)."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** 0.8 for i in range(tenants)]
    names = [f"tenant-{i:05d}" for i in range(tenants)]
    for start in range(0, count, BATCH):
        picked = rng.choices(names, weights, k=min(BATCH, count - start))
        yield [
            LedgerEntry(
                request_id=f"req-{start + i:09d}",
                tenant_id=t,
                key_id=f"{t}-k{i % 3}",
                endpoint="chat.completions",
                model_requested=m,
                model_served=m,
                provider="mock",
                status="ok" if i % 50 else "error",
                http_status=200 if i % 50 else 502,
                started_at=MONTH_START + rng.random() * MONTH_S,
                finished_at=MONTH_START + 1,
                feature=FEATURES[i % 4],
                input_tokens=rng.randrange(2000),
                output_tokens=rng.randrange(800),
                cost=rng.randrange(10**9),
                revenue=rng.randrange(2 * 10**9),
                latency_ms=rng.random() * 3000,
                upstream_ms=rng.random() * 2900,
            )  # fmt: skip
            for i, (t, m) in enumerate(zip(picked, rng.choices(MODELS, k=len(picked)), strict=True))
        ]


async def timed(name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    """The best of three plain runs, then one more traced for its memory peak (tracing
    slows Python down, so it is not timed)."""
    took = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        await fn()
        took = min(took, time.perf_counter() - t0)
    tracemalloc.start()
    result = await fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"  {name:<34} {took * 1000:9.1f} ms   peak Python memory {peak / 2**20:7.1f} MiB")
    return result


async def run(store: Any, count: int, tenants: int) -> None:
    await store.open()
    try:
        t0 = time.perf_counter()
        for batch in entries(count, tenants):
            await store.append_ledger(batch)
        print(
            f"loaded {count:,} entries of {tenants:,} tenants in {time.perf_counter() - t0:.1f} s"
        )
        reports = Reports(store)
        end = MONTH_START + MONTH_S
        first = "tenant-00000"
        paris = SeriesQuery(MONTH_START, end, "day", "Europe/Paris")
        one = SeriesQuery(MONTH_START, end, "hour", tenant_id=first)
        await timed("top spenders (top 10, by cost)",
                    lambda: reports.top_spenders(MONTH_START, end, "cost", n=10))  # fmt: skip
        await timed("top spenders (top 10%, by revenue)",
                    lambda: reports.top_spenders(MONTH_START, end, "revenue",
                                                 top_percent=10))  # fmt: skip
        await timed("spend by day (month, UTC)",
                    lambda: reports.series(SeriesQuery(MONTH_START, end, "day")))  # fmt: skip
        await timed("spend by day (month, Europe/Paris)", lambda: reports.series(paris))
        await timed("spend by hour, one tenant", lambda: reports.series(one))
        await timed("margins' usage by tenant (month)",
                    lambda: store.usage(UsageQuery(None, MONTH_START, end, "tenant")))  # fmt: skip
        await timed("reconciliation's ledger totals",
                    lambda: ledger_totals(store, MONTH_START, end, None))  # fmt: skip
        await timed("usage of one tenant by model",
                    lambda: store.usage(UsageQuery(first, MONTH_START, end, "model")))  # fmt: skip
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process (loading included): {rss:.0f} MiB")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--path", type=Path, default=None, help="SQLite file (default: a temp one)")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    if args.backend == "sqlite":
        from farebox.stores.sqlite.store import SQLiteStore

        path = args.path or Path(tempfile.mkdtemp()) / "reports.db"
        print(f"SQLite at {path}")
        asyncio.run(run(SQLiteStore(path, outbox=False), args.entries, args.tenants))
    else:
        from farebox.stores.postgres.store import PostgresStore

        schema = f"farebox_bench_reports_{uuid.uuid4().hex[:8]}"
        print(f"PostgreSQL schema {schema} (dropped at the end)")
        asyncio.run(_postgres(PostgresStore(args.dsn, schema=schema), args))


async def _postgres(store: Any, args: argparse.Namespace) -> None:
    try:
        await run(store, args.entries, args.tenants)
    finally:
        import asyncpg

        conn = await asyncpg.connect(args.dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{store._schema}" CASCADE')
        finally:
            await conn.close()


if __name__ == "__main__":
    main()
