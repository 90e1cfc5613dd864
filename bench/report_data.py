"""A big, realistic ledger for the report benchmarks (``bench.report_scale``,
``bench.reports_beside_traffic``): many tenants (a few large, most small), two keys each,
several models and features, 2% errors, a fifth of the entries tagged, spread evenly over a
time range. Deterministic for a seed.

Entries go in through the store's own ledger write path (``append_ledger``) in big batches,
so every index, the request log's tag table and the rollups (kept by the ledger's triggers
once issue 11's rollups are in the tree) are filled exactly as the gateway fills them, only
many entries per transaction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from farebox.core.records import LedgerEntry, Tenant

MODELS = (("gpt-4o-mini", "openai", 150_000, 600_000), ("gpt-4o", "openai", 2_500_000, 10_000_000),
          ("claude-sonnet", "anthropic", 3_000_000, 15_000_000))  # fmt: skip
FEATURES = ("chat", "search", "summarise", "agent", None)
TEAMS = tuple(f"team{i}" for i in range(50))
PLAN = "bench"
HEAVY_TENANT = "t00000"  # the tenant the skew favours most: the worst case for its filters


@dataclass(frozen=True, slots=True)
class Shape:
    tenants: int
    entries: int
    start: float  # unix seconds: the entries' started_at is spread over [start, end)
    end: float
    seed: int = 11
    tagged: float = 0.2  # the share of entries with metadata tags

    def tenant_id(self, i: int) -> str:
        return f"t{i:05d}"


def tenants(shape: Shape, created_at: float) -> list[Tenant]:
    return [Tenant(id=shape.tenant_id(i), name=f"Tenant {i}", plan=PLAN, created_at=created_at)
            for i in range(shape.tenants)]  # fmt: skip


def entries(shape: Shape, first: int, count: int) -> list[LedgerEntry]:
    """Entries ``first`` to ``first + count - 1`` (each a function of the seed and its index
    range, so a batch can be made without the ones before it)."""
    rng = random.Random(shape.seed * 1_000_003 + first)
    span = shape.end - shape.start
    out = []
    for i in range(first, first + count):
        tenant = int(shape.tenants * rng.random() ** 3)  # skewed: low ids are the big spenders
        model, provider, in_price, out_price = MODELS[rng.randrange(len(MODELS))]
        tokens_in, tokens_out = rng.randrange(20, 4_000), rng.randrange(1, 800)
        cost = (tokens_in * in_price + tokens_out * out_price) // 1_000_000 * 1_000
        failed = rng.random() < 0.02
        started = shape.start + span * (i + rng.random()) / shape.entries
        meta: dict[str, Any] = {}
        if rng.random() < shape.tagged:
            meta = {"team": TEAMS[rng.randrange(len(TEAMS))], "env": rng.choice(("prod", "dev"))}
        out.append(LedgerEntry(
            request_id=f"req_{shape.seed}_{i:010d}", tenant_id=shape.tenant_id(tenant),
            key_id=f"key_{tenant}_{rng.randrange(2)}", endpoint="chat.completions",
            model_requested=model, model_served=model, provider=provider,
            status="error" if failed else "ok", http_status=502 if failed else 200,
            started_at=started, finished_at=started + 0.4,
            user=f"user{rng.randrange(20)}" if rng.random() < 0.5 else None,
            feature=FEATURES[rng.randrange(len(FEATURES))], metadata=meta,
            input_tokens=0 if failed else tokens_in, output_tokens=0 if failed else tokens_out,
            cost=0 if failed else cost, revenue=0 if failed else cost * 13 // 10,
            latency_ms=rng.uniform(80, 2_000), upstream_ms=rng.uniform(70, 1_990),
        ))  # fmt: skip
    return out


def batches(shape: Shape, size: int) -> Iterator[list[LedgerEntry]]:
    for first in range(0, shape.entries, size):
        yield entries(shape, first, min(size, shape.entries - first))


async def load(
    store: Any, shape: Shape, batch: int = 50_000, say: Callable[[str], None] = print
) -> float:
    """Create the tenants and append every entry; the seconds it took."""
    began = time.perf_counter()
    known = {t.id for t in await store.list_tenants()}
    for tenant in tenants(shape, shape.start):
        if tenant.id not in known:
            await store.create_tenant(tenant)
    done = 0
    for rows in batches(shape, batch):
        await store.append_ledger(rows)
        done += len(rows)
        elapsed = time.perf_counter() - began
        say(f"  loaded {done:,} / {shape.entries:,} entries ({done / elapsed:,.0f}/s)")
    return time.perf_counter() - began
