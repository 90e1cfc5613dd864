"""A big, realistic ledger for the report benchmarks (``bench.report_scale``,
``bench.reports_beside_traffic``), loaded fast, and a ``farebox serve`` started on it.

The data: tenants Zipf-like in volume (tenant ``i`` weighs ``1 / (i + 1) ** 1.1``, so
``t00000`` is the biggest), a few keys each, several models, features and users, 5% errors,
a fifth of the entries tagged (``team``, ``env`` and an integer ``tier``), spread evenly over
``[start, end)``. Deterministic for a seed.

The load: entries go in through the store's own ledger write (``append_ledger``), in big
batches, with the two migrations that add triggers to the ledger (the rollups and the request
log's tags) rewound first: their triggers, tables and indexes dropped and their
``schema_version`` rows deleted. Reopening the store then replays those migrations, which
rebuild the rollup and tag tables from the loaded ledger with one ``INSERT .. SELECT``
aggregate each (their backfill) and recreate the triggers: the state the triggers would have
left, without paying them per entry. ``check`` then compares every rollup table's sums and the
tag count with the ledger's.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
import itertools
import json
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fleet_config import plan_body
from bench.gateway import Gateway, start_serve
from bench.procs import pin_pid
from farebox.core.records import LedgerEntry, Tenant

MODELS = (("gpt-4o-mini", "openai", 150_000, 600_000), ("gpt-4o", "openai", 2_500_000, 10_000_000),
          ("claude-sonnet", "anthropic", 3_000_000, 15_000_000),
          ("claude-haiku", "anthropic", 800_000, 4_000_000))  # fmt: skip
FEATURES = ("chat", "search", "summarise", "agent", None)
TEAMS = tuple(f"team{i}" for i in range(50))
KEYS_PER_TENANT = 3
USERS = 40
PLAN = "bench"
HEAVY_TENANT = "t00000"  # the tenant the skew favours most: the worst case for its filters
ROLLUP_TABLES = ("rollups", "rollups_daily", "rollups_total")
# what the rollups and request-log migrations add on top of the ledger (rewound for a load)
SQLITE_REWIND = (
    *(f"DROP TRIGGER ledger_rollup_{e}" for e in ("insert", "delete", "update")),
    *(f"DROP TRIGGER ledger_tags_{e}" for e in ("add", "drop", "change")),
    *(f"DROP TABLE {t}" for t in (*ROLLUP_TABLES, "ledger_tags")),
    "DROP INDEX ledger_tenant_status",
    "DROP INDEX ledger_status",
)
POSTGRES_REWIND = (
    *(f"DROP FUNCTION {{s}}.{f}() CASCADE"
      for f in ("rollup_insert", "rollup_delete", "rollup_update", "ledger_tags_sync")),
    *(f"DROP TABLE {{s}}.{t}" for t in (*ROLLUP_TABLES, "ledger_tags")),
    "DROP INDEX {s}.ledger_tenant_status",
    "DROP INDEX {s}.ledger_status",
)  # fmt: skip


def log(message: str) -> None:
    """Progress, on stderr (the results go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def month_range(month: str | None) -> tuple[str, float, float]:
    """``YYYY-MM`` (default: the last full UTC month) and its bounds in unix seconds."""
    if month is None:
        first = dt.datetime.now(dt.UTC).replace(day=1) - dt.timedelta(days=1)
        month = f"{first.year:04d}-{first.month:02d}"
    year, mon = (int(part) for part in month.split("-"))
    start = dt.datetime(year, mon, 1, tzinfo=dt.UTC).timestamp()
    days = calendar.monthrange(year, mon)[1]
    return month, start, start + days * 86_400.0


@dataclass(frozen=True, slots=True)
class Shape:
    tenants: int
    entries: int
    start: float  # unix seconds: the entries' started_at is spread over [start, end)
    end: float
    seed: int = 11
    tagged: float = 0.2  # the share of entries with metadata tags
    errors: float = 0.05

    def tenant_id(self, i: int) -> str:
        return f"t{i:05d}"


def tenants(shape: Shape, created_at: float) -> list[Tenant]:
    return [Tenant(id=shape.tenant_id(i), name=f"Tenant {i}", plan=PLAN, created_at=created_at)
            for i in range(shape.tenants)]  # fmt: skip


def entries(shape: Shape, first: int, count: int) -> list[LedgerEntry]:
    """Entries ``first`` to ``first + count - 1`` (each a function of the seed and its index
    range, so a batch can be made without the ones before it)."""
    rng = random.Random(shape.seed * 1_000_003 + first)
    weights = list(itertools.accumulate(1 / (i + 1) ** 1.1 for i in range(shape.tenants)))
    span = shape.end - shape.start
    out = []
    for i in range(first, first + count):
        tenant = bisect.bisect(weights, rng.random() * weights[-1])
        model, provider, in_price, out_price = MODELS[rng.randrange(len(MODELS))]
        tokens_in, tokens_out = rng.randrange(20, 4_000), rng.randrange(1, 800)
        cost = (tokens_in * in_price + tokens_out * out_price) // 1_000_000 * 1_000
        failed = rng.random() < shape.errors
        started = shape.start + span * (i + rng.random()) / shape.entries
        meta: dict[str, Any] = {}
        if rng.random() < shape.tagged:
            meta = {"team": TEAMS[rng.randrange(len(TEAMS))], "env": rng.choice(("prod", "dev")),
                    "tier": rng.randrange(3)}  # fmt: skip
        out.append(LedgerEntry(
            request_id=f"req_{shape.seed}_{i:010d}", tenant_id=shape.tenant_id(tenant),
            key_id=f"key_{tenant}_{rng.randrange(KEYS_PER_TENANT)}", endpoint="chat.completions",
            model_requested=model, model_served=model, provider=provider,
            status="error" if failed else "ok", http_status=502 if failed else 200,
            started_at=started, finished_at=started + 0.4,
            user=f"user{rng.randrange(USERS)}" if rng.random() < 0.6 else None,
            feature=FEATURES[rng.randrange(len(FEATURES))], metadata=meta,
            input_tokens=0 if failed else tokens_in, output_tokens=0 if failed else tokens_out,
            cost=0 if failed else cost, revenue=0 if failed else cost * 13 // 10,
            latency_ms=rng.uniform(80, 2_000), upstream_ms=rng.uniform(70, 1_990),
        ))  # fmt: skip
    return out


def batches(shape: Shape, size: int) -> Iterator[list[LedgerEntry]]:
    for first in range(0, shape.entries, size):
        yield entries(shape, first, min(size, shape.entries - first))


def first_rewound(migrations: tuple[str, ...]) -> int:
    """The number of the rollups migration; the request log's follows it, and is the last."""
    number = next(i + 1 for i, m in enumerate(migrations) if "rollups_total" in m)
    if number + 1 != len(migrations) or "ledger_tags" not in migrations[number]:
        raise SystemExit("bench.report_data: the migrations changed; update SQLITE_REWIND / "
                         "POSTGRES_REWIND to what follows the rollups migration now")  # fmt: skip
    return number


class Sql:
    """Plain SQL on an open store, whichever its backend: ``rewind`` and ``check`` need it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.postgres = hasattr(store, "_pool")

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.postgres:
            return [tuple(r) for r in await self.store._pool.fetch(sql.format(s=self.store._s))]
        db = self.store._db
        found: list[tuple[Any, ...]] = await self.store._run(
            lambda: db.execute(sql.format(s="main")).fetchall()
        )
        return found

    async def script(self, statements: list[str]) -> None:
        if self.postgres:
            async with self.store._pool.acquire() as conn, conn.transaction():
                for sql in statements:
                    await conn.execute(sql.format(s=self.store._s))
            return

        def run() -> None:
            db = self.store._db
            db.execute("BEGIN IMMEDIATE")
            for sql in statements:
                db.execute(sql.format(s="main"))
            db.execute("COMMIT")

        await self.store._run(run)


async def rewind(store: Any) -> None:
    """Drop what the rollups and request-log migrations added (the ledger's triggers first of
    all), so the next open replays them over the loaded ledger."""
    sql = Sql(store)
    if sql.postgres:
        from farebox.stores.postgres.schema import MIGRATIONS as PG_MIGRATIONS

        undo = [*POSTGRES_REWIND, "DELETE FROM {s}.schema_version WHERE version >= "
                f"{first_rewound(PG_MIGRATIONS)}"]  # fmt: skip
    else:
        from farebox.stores.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS

        undo = [*SQLITE_REWIND, "DELETE FROM {s}.schema_version WHERE version >= "
                f"{first_rewound(SQLITE_MIGRATIONS)}"]  # fmt: skip
    await sql.script(undo)


async def check(store: Any, tag_rows: int | None = None) -> list[str]:
    """Each rollup table's sums against the ledger's (and the tag rows against ``tag_rows``);
    one line each, starting with OK or MISMATCH."""
    sql = Sql(store)
    sums = ("requests", "errors", "input_tokens", "output_tokens", "cost", "revenue")
    ledger = await sql.rows(
        "SELECT count(*), sum(CASE WHEN http_status >= 400 THEN 1 ELSE 0 END), "
        "sum(input_tokens), sum(output_tokens), sum(cost), sum(revenue) FROM {s}.ledger"
    )
    want = tuple(int(v or 0) for v in ledger[0])
    lines = [f"ledger: {dict(zip(sums, want, strict=True))}"]
    for table in ROLLUP_TABLES:
        got = await sql.rows(f"SELECT {', '.join(f'sum({c})' for c in sums)} FROM {{s}}.{table}")
        have = tuple(int(v or 0) for v in got[0])
        verdict = "OK" if have == want else f"MISMATCH {dict(zip(sums, have, strict=True))}"
        lines.append(f"{verdict}: {table} sums == ledger sums")
    if tag_rows is not None:
        tags = (await sql.rows("SELECT count(*) FROM {s}.ledger_tags"))[0][0]
        verdict = "OK" if tags == tag_rows else "MISMATCH"
        lines.append(f"{verdict}: ledger_tags has {tags:,} rows, the entries carry {tag_rows:,}")
    return lines


async def bulk_load(
    open_store: Callable[[], Awaitable[Any]],
    shape: Shape,
    batch: int = 50_000,
    say: Callable[[str], None] = print,
) -> tuple[float, list[str]]:
    """Create the tenants and append every entry into the store ``open_store`` opens (a new,
    empty database), triggers rewound; reopen it (the migrations rebuild rollups and tags and
    recreate the triggers) and check it. The seconds it all took and the check's lines."""
    began = time.perf_counter()
    store = await open_store()
    try:
        await rewind(store)
        for tenant in tenants(shape, shape.start):
            await store.create_tenant(tenant)
        done = tag_rows = 0
        for rows in batches(shape, batch):
            await store.append_ledger(rows)
            done += len(rows)
            tag_rows += sum(len(e.metadata) for e in rows)  # every tag value is str or int
            rate = done / (time.perf_counter() - began)
            say(f"  loaded {done:,} / {shape.entries:,} ({rate:,.0f}/s)")
    finally:
        await store.close()
    say(f"  ledger in {time.perf_counter() - began:,.1f} s; rebuilding rollups and tags")
    store = await open_store()  # replays the rewound migrations: backfill and triggers
    try:
        if Sql(store).postgres:  # what autovacuum would soon do: plans for a big table
            await store._pool.execute("ANALYZE")
        seconds = time.perf_counter() - began
        say(f"  loaded and rebuilt in {seconds:,.1f} s; checking")
        return seconds, await check(store, tag_rows)
    finally:
        await store.close()


async def sqlite_store(path: Path, outbox: bool = False) -> Any:
    from farebox.stores.sqlite.store import SQLiteStore

    store = SQLiteStore(path, outbox=outbox)
    await store.open()
    return store


async def postgres_store(url: str, outbox: bool = False) -> Any:
    """The store the gateway opens on ``url``: its ``public`` schema (the gateway has no
    schema setting, so a bench on PostgreSQL gets a database of its own)."""
    from farebox.stores.postgres.store import PostgresStore
    from farebox.stores.timeouts import StoreTimeouts

    # statements of minutes: the migrations' backfill over millions of entries, the check
    long = StoreTimeouts(postgres_command_s=3_600.0)
    store = PostgresStore(url, outbox=outbox, pool_min=1, pool_max=4, timeouts=long)
    await store.open()
    return store


def stores_yaml(
    sqlite_path: Path, postgres_url: str | None, redis_url: str, redis_prefix: str = ""
) -> str:
    """The gateway's stores: the SQLite file, or PostgreSQL plus Redis (under
    ``redis_prefix``: a loaded database would otherwise take the shared legacy one)."""
    if postgres_url is None:
        return f"database: {json.dumps(f'sqlite:///{sqlite_path}')}\n"
    return (f"database: {json.dumps(postgres_url)}\nredis: {json.dumps(redis_url)}\n"
            f"redis_prefix: {json.dumps(redis_prefix)}\n"
            'secret: "env:FAREBOX_SECRET"\n')  # fmt: skip


def drop_redis_prefix(redis_url: str, prefix: str) -> int:
    """Delete the keys under ``{prefix}:`` (the bench's own), never any other; how many."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match="{" + prefix + "}:*", count=1_000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


class PreloadedGateway(Gateway):
    """``farebox serve`` on a database loaded before it starts: ``preload(directory)`` loads
    it, ``stores`` is the config's first lines (``stores_yaml``) for that directory."""

    def __init__(
        self,
        preload: Callable[[Path], None],
        stores: Callable[[Path], str],
        upstream_base_url: str,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(upstream_base_url, *args, **kwargs)
        self._preload, self._stores = preload, stores
        self._secret = secrets.token_urlsafe(32)

    def _env(self) -> dict[str, str]:
        return {**super()._env(), "FAREBOX_SECRET": self._secret}  # PostgreSQL's config asks

    def start(self, ready_timeout_s: float = 600.0) -> Gateway:
        self.dir = Path(tempfile.mkdtemp(prefix="farebox-bench-reports-"))
        config = self.dir / "farebox.yaml"
        config.write_text(self._stores(self.dir) + plan_body(self._upstream))
        self._preload(self.dir)
        self.port, self.proc = start_serve(self.dir, config, self._env())
        pin_pid(self.proc.pid, self._cpus)
        self._wait_ready(ready_timeout_s)
        return self
