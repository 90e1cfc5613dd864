"""The data of ``bench.reports``: ``--tenants`` tenants on four plans and ``--entries`` ledger
entries over one UTC month, plus upsell moments, plan changes and credit top-ups, loaded fast.

How it is loaded (not how the gateway writes; the same rows in the end):

1. the store is opened on a fresh database (SQLite file) or schema (PostgreSQL), so every
   migration has run;
2. tenants, moments, plan changes and top-ups go in through the store's own methods;
3. the ledger's secondary indexes are dropped and its triggers switched off (PostgreSQL:
   ``DISABLE TRIGGER USER``; SQLite: dropped, their SQL kept), the entries are inserted in
   big batches straight into the ledger table (PostgreSQL: ``COPY``; SQLite: ``executemany``
   in one transaction per batch), then the indexes are recreated from their own SQL;
4. the three rollup tables are filled from the ledger with the very ``INSERT .. SELECT``
   aggregate their migrations backfill with (``RollupSQL.aggregated``), and the triggers are
   switched back on (recreated on SQLite): the state the triggers would have left;
5. ``check``: each rollup table's sums against the ledger's.

Entries: tenant ``i`` weighs ``1 / (i + 1) ** 1.1`` (``t00000`` is the biggest), four models,
5% failed (no tokens, no cost), revenue the tenant's plan markup on the cost (per entry,
rounded down), spread evenly over the month. Deterministic for a seed.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from farebox.core.credits import CreditGrant
from farebox.core.records import Tenant
from farebox.core.upsell import HOUR, Moment, PlanChange
from farebox.stores.rollup_rows import GRAINS, SUMS, key_of, table_of
from farebox.stores.rollup_sql import POSTGRES_ROLLUP, SQLITE_ROLLUP

# plan: (monthly fee USD, markup as (num, den))
PLANS = {"free": ("0", (3, 2)), "basic": ("10", (13, 10)), "pro": ("49", (6, 5)),
         "scale": ("499", (11, 10))}  # fmt: skip
PLAN_NAMES = tuple(PLANS)
MODELS = (("gpt-4o-mini", "openai", 150_000, 600_000), ("gpt-4o", "openai", 2_500_000, 10_000_000),
          ("claude-sonnet", "anthropic", 3_000_000, 15_000_000),
          ("claude-haiku", "anthropic", 800_000, 4_000_000))  # fmt: skip
FEATURES = ("chat", "search", "summarise", None)
COLUMNS = ("request_id", "tenant_id", "key_id", "endpoint", "model_requested", "model_served",
           "provider", "status", "http_status", "started_at", "finished_at", "feature",
           "input_tokens", "cached_input_tokens", "output_tokens", "cost", "revenue",
           "latency_ms", "upstream_ms")  # fmt: skip
ROLLUP_TABLES = tuple(table_of(g) for g in GRAINS)


@dataclass(frozen=True, slots=True)
class Shape:
    tenants: int
    entries: int
    start: float  # the month: [start, end)
    end: float
    seed: int = 13

    def tenant_id(self, i: int) -> str:
        return f"t{i:05d}"

    def plan(self, i: int) -> str:
        return PLAN_NAMES[i % len(PLAN_NAMES)]


def rows(shape: Shape, first: int, count: int) -> list[tuple[Any, ...]]:
    """Ledger rows ``first`` to ``first + count - 1``, in ``COLUMNS`` order."""
    rng = random.Random(shape.seed * 1_000_003 + first)
    weights = list(itertools.accumulate(1 / (i + 1) ** 1.1 for i in range(shape.tenants)))
    top, span = weights[-1], shape.end - shape.start
    markups = [PLANS[shape.plan(i)][1] for i in range(shape.tenants)]
    ids = [shape.tenant_id(i) for i in range(shape.tenants)]
    out = []
    for i in range(first, first + count):
        t = bisect.bisect(weights, rng.random() * top)
        model, provider, in_price, out_price = MODELS[i & 3]
        failed = rng.random() < 0.05
        tin, tout = (0, 0) if failed else (rng.randrange(20, 4_000), rng.randrange(1, 800))
        cost = (tin * in_price + tout * out_price) // 1_000_000 * 1_000
        num, den = markups[t]
        started = shape.start + span * (i + 0.5) / shape.entries
        out.append((
            f"req_{shape.seed}_{i:010d}", ids[t], f"key_{t}", "chat.completions", model, model,
            provider, "error" if failed else "ok", 502 if failed else 200, started,
            started + 0.4, FEATURES[i % 4], tin, tin // 4, tout, cost, cost * num // den,
            300.0 + (i % 700), 280.0 + (i % 700),
        ))  # fmt: skip
    return out


def batches(shape: Shape, size: int) -> Iterator[list[tuple[Any, ...]]]:
    for first in range(0, shape.entries, size):
        yield rows(shape, first, min(size, shape.entries - first))


async def accounts(store: Any, shape: Shape) -> dict[str, int]:
    """Tenants, and the month's upsell data: a tenth of the tenants refused (three moments
    each, budget walls and empty balances), a fifth of those upgrading and a tenth topping up
    within days, plus a few moving down."""
    rng = random.Random(shape.seed)
    for i in range(shape.tenants):
        await store.create_tenant(
            Tenant(
                id=shape.tenant_id(i),
                name=f"Tenant {i}",
                plan=shape.plan(i),
                created_at=shape.start - 86_400,
            )
        )
    refused = rng.sample(range(shape.tenants), max(shape.tenants // 10, 1))
    moments, changes, top_ups = [], 0, 0
    for i in refused:
        hours = sorted(rng.sample(range(int((shape.end - shape.start) // HOUR)), 3))
        for n, h in enumerate(hours):
            kind, budget = (
                ("insufficient_credits", "") if n == 2 else ("budget_exceeded", "tenant/month")
            )
            moments.append(Moment(shape.tenant_id(i), kind, budget, int(shape.start) + h * HOUR,
                                  shape.plan(i)))  # fmt: skip
        at = shape.start + hours[0] * HOUR + rng.uniform(0, 10) * 86_400
        roll = rng.random()
        if roll < 0.2:
            to = PLAN_NAMES[min(PLAN_NAMES.index(shape.plan(i)) + 1, len(PLAN_NAMES) - 1)]
            change = PlanChange(shape.tenant_id(i), shape.plan(i), to, at)
            await store.upsell.add_plan_change(change)
            changes += 1
        elif roll < 0.3:
            grant = CreditGrant(f"g{i}", shape.tenant_id(i), f"k{i}", "top_up", 10**13, at)
            await store.credits.grant_credits(grant)
            top_ups += 1
    await store.upsell.add_moments(moments)
    return {"refused": len(refused), "moments": len(moments), "upgrades": changes,
            "top_ups": top_ups}  # fmt: skip


class Loader:
    """Raw SQL on an open store: the bulk insert, the indexes and triggers, the rollups."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.postgres = hasattr(store, "_pool")
        self._indexes: list[str] = []
        self._triggers: list[str] = []

    async def _pg(self, sql: str, *args: Any) -> list[Any]:
        async with self.store._pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    async def _lite(self, fn: Callable[[Any], Any]) -> Any:
        return await self.store._run(lambda: fn(self.store._db))

    async def unhook(self) -> None:
        """Drop the ledger's secondary indexes and switch its triggers off (kept to redo)."""
        if self.postgres:
            s = self.store._schema
            found = await self._pg("SELECT indexname, indexdef FROM pg_indexes WHERE "
                                   "schemaname = $1 AND tablename = 'ledger' AND indexname "
                                   "<> 'ledger_pkey'", s)  # fmt: skip
            self._indexes = [r["indexdef"] for r in found]
            for r in found:
                await self._pg(f'DROP INDEX "{s}"."{r["indexname"]}"')
            await self._pg(f'ALTER TABLE "{s}".ledger DISABLE TRIGGER USER')
            return

        def run(db: Any) -> None:
            got = db.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = "
                             "'ledger' AND type IN ('index', 'trigger') AND sql IS NOT NULL"
                             ).fetchall()  # fmt: skip
            self._indexes = [sql for kind, _, sql in got if kind == "index"]
            self._triggers = [sql for kind, _, sql in got if kind == "trigger"]
            for kind, name, _ in got:
                db.execute(f'DROP {kind.upper()} "{name}"')
            db.commit()

        await self._lite(run)

    async def insert(self, batch: list[tuple[Any, ...]]) -> None:
        if self.postgres:
            async with self.store._pool.acquire() as conn:
                await conn.copy_records_to_table("ledger", records=batch, columns=COLUMNS,
                                                 schema_name=self.store._schema)  # fmt: skip
            return
        sql = f"INSERT INTO ledger({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})"

        def run(db: Any) -> None:
            db.execute("BEGIN")
            db.executemany(sql, batch)
            db.execute("COMMIT")

        await self._lite(run)

    async def rehook(self, say: Callable[[str], None]) -> None:
        """Recreate the indexes, fill the rollups from the ledger, switch the triggers on."""
        began = time.perf_counter()
        if self.postgres:
            s = self.store._schema
            for sql in self._indexes:
                await self._pg(sql)
            say(f"  indexes in {time.perf_counter() - began:,.1f} s")
            for g in GRAINS:
                rows = POSTGRES_ROLLUP.aggregated(f'"{s}".ledger', g, SUMS)
                await self._pg(f'INSERT INTO "{s}".{table_of(g)}'
                               f"({', '.join(key_of(g) + SUMS)}) {rows}")  # fmt: skip
            await self._pg(f'ALTER TABLE "{s}".ledger ENABLE TRIGGER USER')
            await self._pg(f'ANALYZE "{s}".ledger')
            for table in ROLLUP_TABLES:
                await self._pg(f'ANALYZE "{s}".{table}')
            say(f"  indexes and rollups in {time.perf_counter() - began:,.1f} s")
            return

        def run(db: Any) -> None:
            for sql in self._indexes:
                db.execute(sql)
            for g in GRAINS:
                db.execute(f"INSERT INTO {table_of(g)}({', '.join(key_of(g) + SUMS)}) "
                           f"{SQLITE_ROLLUP.aggregated('ledger', g, SUMS)}")  # fmt: skip
            for sql in self._triggers:
                db.execute(sql)
            db.commit()
            db.execute("ANALYZE")

        await self._lite(run)
        say(f"  indexes and rollups in {time.perf_counter() - began:,.1f} s")

    async def check(self) -> list[str]:
        """Each rollup table's sums against the ledger's: OK or MISMATCH."""
        sums = ("requests", "input_tokens", "output_tokens", "cost", "revenue")
        prefix = f'"{self.store._schema}".' if self.postgres else ""
        ledger = ("SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost), "
                  f"sum(revenue) FROM {prefix}ledger")  # fmt: skip
        want = await self._one(ledger)
        lines = [f"ledger: {dict(zip(sums, want, strict=True))}"]
        for table in ROLLUP_TABLES:
            have = await self._one(f"SELECT {', '.join(f'sum({c})' for c in sums)} "
                                   f"FROM {prefix}{table}")  # fmt: skip
            lines.append(("OK" if have == want else f"MISMATCH {have}") + f": {table} == ledger")
        return lines

    async def _one(self, sql: str) -> tuple[int, ...]:
        if self.postgres:
            row = (await self._pg(sql))[0]
        else:
            row = await self._lite(lambda db: db.execute(sql).fetchone())
        return tuple(int(v or 0) for v in row)
