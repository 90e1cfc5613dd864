"""Issue [13], acceptance 5: the revenue reports at scale. Fills a ledger of ``--entries``
entries for ``--tenants`` tenants over one UTC month (``bench.reports_fill``: bulk inserted
straight into the ledger table, the rollups built from it by the migrations' own aggregate),
then times each report in process, on the store the gateway would open, best and median of
``--repeat`` after a warm-up:

margins, plan profitability, top spenders of the month (billing) and of a range (issue 11's
``Reports``), what-if repricing (a markup; a per-request price: two series), upsell conversion,
and the invoice preview of the biggest tenant (``farebox.billing.invoices.invoice``).

Prints a table, with PASS under ``--budget-ms`` (1000) per report. Not a test.

```
nice .venv/bin/python -m bench.reports --backend sqlite --tenants 4000 --entries 2000000
nice .venv/bin/python -m bench.reports --backend postgres --tenants 4000 --entries 10000000
```
PostgreSQL: a fresh schema in ``--dsn`` (default the test database), dropped at the end unless
``--keep``; SQLite: a file in a temporary directory (or ``--db``, kept). ``--reuse`` with
``--db`` or ``--schema`` (and ``--keep``) times the reports again on what a run filled.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.reports_fill import PLANS, Loader, Shape, accounts, batches
from farebox.billing.invoices import invoice
from farebox.billing.margins import margins
from farebox.billing.profitability import plan_profitability
from farebox.billing.reprice import reprice
from farebox.billing.top_spenders import top_spenders
from farebox.billing.upsell import upsell_report
from farebox.config.settings import PlanConfig
from farebox.observe.reports import Reports

DSN = "postgresql://postgres@127.0.0.1:5432/test"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def last_month() -> tuple[str, float, float]:
    today = dt.datetime.now(dt.UTC)
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp()
    days = calendar.monthrange(year, month)[1]
    return f"{year}-{month:02d}", start, start + days * 86_400.0


def plan_configs() -> dict[str, PlanConfig]:
    return {
        name: PlanConfig.model_validate(
            {"pricing": {"monthly_fee_usd": fee, "markup": str(num / den)}}
        )
        for name, (fee, (num, den)) in PLANS.items()
    }


async def open_store(args: argparse.Namespace, where: str) -> Any:
    if args.backend == "postgres":
        from farebox.stores.postgres.store import PostgresStore
        from farebox.stores.timeouts import StoreTimeouts

        long = StoreTimeouts(postgres_command_s=3_600.0)  # the rollups' aggregate takes minutes
        store: Any = PostgresStore(args.dsn, schema=where, pool_min=1, pool_max=4, outbox=False,
                                   timeouts=long)  # fmt: skip
    else:
        from farebox.stores.sqlite.store import SQLiteStore

        store = SQLiteStore(Path(where), outbox=False, synchronous="off")
    await store.open()
    return store


async def fill(store: Any, shape: Shape, batch: int) -> dict[str, Any]:
    began = time.perf_counter()
    upsell = await accounts(store, shape)
    loader = Loader(store)
    await loader.unhook()
    done = 0
    for rows in batches(shape, batch):
        await loader.insert(rows)
        done += len(rows)
        rate = done / (time.perf_counter() - began)
        say(f"  {done:,} / {shape.entries:,} entries ({rate:,.0f}/s)")
    ledger_s = time.perf_counter() - began
    await loader.rehook(say)
    lines = await loader.check()
    for line in lines:
        say("  " + line)
    if any("MISMATCH" in line for line in lines):
        raise SystemExit("the rollups do not match the ledger")
    return {"upsell": upsell, "ledger_s": ledger_s, "fill_s": time.perf_counter() - began}


def reports(store: Any, month: str, start: float, end: float, heavy: str
            ) -> dict[str, Callable[[], Awaitable[Any]]]:  # fmt: skip
    plans, now = plan_configs(), end + 86_400
    out: dict[str, Callable[[], Awaitable[Any]]] = {
        "margins": lambda: margins(store, plans, "free", month),
        "plan profitability": lambda: plan_profitability(store, plans, "free", month),
        "top spenders (month, top 10%)": lambda: top_spenders(store, plans, "free", month,
                                                              top_percent=10),
        "top spenders (range, issue 11)": lambda: Reports(store).top_spenders(start, end,
                                                                              "revenue", 10),
        "reprice (pro, markup 3.5)": lambda: reprice(store, plans, "free", month, "pro",
                                                     {"markup": "3.5"}, now),
        "reprice (pro, per request)": lambda: reprice(store, plans, "free", month, "pro",
                                                      {"per_request": "0.02"}, now),
        "upsell (window 14 days)": lambda: upsell_report(store, store.upsell, plans, "free",
                                                         month, 14, now),
    }  # fmt: skip
    out["invoice preview (biggest tenant)"] = lambda: invoice(store, plans, "free", heavy,
                                                              month, lambda: now)  # fmt: skip
    return out


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float, float]:
    """First call (cold), then best and median of ``repeat``, in milliseconds."""
    began = time.perf_counter()
    await fn()
    first = (time.perf_counter() - began) * 1000
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - began) * 1000)
    return first, min(times), statistics.median(times)


async def run(args: argparse.Namespace) -> int:
    month, start, end = last_month()
    shape = Shape(args.tenants, args.entries, start, end)
    tmp = tempfile.TemporaryDirectory(prefix="farebox-bench-reports-")
    where = (
        args.schema or f"bench_reports_{uuid.uuid4().hex[:10]}"
        if args.backend == "postgres"
        else args.db or str(Path(tmp.name) / "reports.db")
    )
    reuse = bool(args.schema) if args.backend == "postgres" else bool(args.db)
    reuse = reuse and args.reuse  # fmt: skip
    say(f"{args.backend}: {args.tenants:,} tenants, {args.entries:,} entries in {month} "
        f"({where})")  # fmt: skip
    store = await open_store(args, where)
    try:
        if reuse and await store.list_tenants():  # filled by an earlier run: timed again
            filled = {"upsell": "as filled before", "ledger_s": 0.0, "fill_s": 0.0}
        else:
            filled = await fill(store, shape, args.batch)
        say(f"filled in {filled['fill_s']:,.0f} s (ledger {filled['ledger_s']:,.0f} s); "
            f"upsell: {filled['upsell']}")  # fmt: skip
        rows = []
        for name, fn in reports(store, month, start, end, shape.tenant_id(0)).items():
            rows.append((name, *await timed(fn, args.repeat)))
        failed = render(args, month, rows, filled)
    finally:
        if args.backend == "postgres" and not args.keep:
            async with store._pool.acquire() as conn:
                await conn.execute(f'DROP SCHEMA "{where}" CASCADE')
        await store.close()
        tmp.cleanup()
    return 1 if failed else 0


def render(args: argparse.Namespace, month: str, rows: list[tuple[str, float, float, float]],
           filled: dict[str, Any]) -> bool:  # fmt: skip
    print(f"\nReports on {args.backend}: {args.tenants:,} tenants, {args.entries:,} entries "
          f"({month}); fill {filled['fill_s']:,.0f} s")  # fmt: skip
    print(f"{'report':36} {'first ms':>10} {'best ms':>10} {'median ms':>10}  budget")
    failed = False
    for name, first, best, median in rows:
        ok = median < args.budget_ms
        failed |= not ok
        verdict = "PASS" if ok else "FAIL"
        print(f"{name:36} {first:10.1f} {best:10.1f} {median:10.1f}  {verdict}")
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--tenants", type=int, default=4_000)
    p.add_argument("--entries", type=int, default=2_000_000)
    p.add_argument("--batch", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--budget-ms", type=float, default=1_000.0)
    p.add_argument("--dsn", default=DSN)
    p.add_argument("--db", default=None, help="SQLite: the file to fill (default: a temp one)")
    p.add_argument("--keep", action="store_true", help="PostgreSQL: keep the schema")
    p.add_argument("--schema", default=None, help="PostgreSQL: the schema (default: a new one)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="time the reports on --db / --schema as an earlier run filled it",
    )
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
