"""Redis CPU per request of the budget store, for the gateway bench's plan.

Starts a private ``redis-server`` on a free loopback port (never the shared one), then runs
``N`` requests' worth of store calls straight against ``RedisBudgets``: one reserve (two usd
budgets, day and month, at tenant scope; the key's requests, tokens and concurrent limits per
minute; the client IP's requests per minute: six holds) and one settle each, ``concurrency``
at a time, spread over ``tenants`` tenants. With ``--settle-behind`` the settles go through
``stores.settler.Settler`` as on the serving path (``farebox serve``): each request only
queues its entry, and one task settles what has queued up, up to ``BATCH_MAX`` entries per
call (``RedisBudgets.settle`` groups them: one script on a single Redis, one per node of a
cluster). Redis CPU is read from ``INFO cpu`` (``used_cpu_sys + used_cpu_user``, which
includes the network I/O of the calls) before and after; ``INFO commandstats`` gives the
script time alone. With ``--cluster`` the store runs on a 3-node Redis Cluster of its own
(``bench.redis_cluster``, the serving path's cluster client) and both sum over the nodes.

    PYTHONPATH=src:. python -m bench.redis_cpu [--requests 20000] [--concurrency 32]
        [--settle-behind] [--cluster] [--detail]

The clock is real time, so rate-limit windows roll over as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from bench.redis_cluster import free_ports, redis_cluster
from farebox.core.budgets import BudgetSpec
from farebox.core.budgets import holds as budget_holds
from farebox.core.periods import parse_period
from farebox.core.records import LedgerEntry, Reservation
from farebox.gateway.rate_limits import LimitSpec
from farebox.gateway.rate_limits import holds as limit_holds
from farebox.stores.redis.budgets import RedisBudgets
from farebox.stores.scaled import redis_client
from farebox.stores.settler import Settler
from farebox.stores.timeouts import StoreTimeouts

USD = 10**12  # pico-USD
SPECS = [
    BudgetSpec("tenant", parse_period("day"), 1_000_000 * USD),
    BudgetSpec("tenant", parse_period("month"), 10_000_000 * USD),
]
LIMITS = [
    LimitSpec("key", 100_000_000, 1_000_000_000_000, 100_000, None, 60),
    LimitSpec("ip", 100_000_000, None, None, None, 60),
]


@contextmanager
def private_redis() -> Iterator[int]:
    (port,) = free_ports(1)
    directory = tempfile.mkdtemp(prefix="fbx-redis-cpu-")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True, check=False).stdout.strip() != "PONG":  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def entry(rid: str, tenant: str, cost: int, status: str = "ok") -> LedgerEntry:
    now = time.time()
    return LedgerEntry(
        request_id=f"req-{rid}", tenant_id=tenant, key_id=f"key-{tenant}",
        endpoint="chat.completions", model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini", provider="mock", status=status,
        http_status=200 if status == "ok" else 0, started_at=now, finished_at=now,
        input_tokens=12, output_tokens=40, cost=cost, reservation_id=rid,
    )  # fmt: skip


def request_holds(tenant: str, now: float) -> list[Any]:
    zone = ZoneInfo("UTC")
    scoped = budget_holds(SPECS, tenant=tenant, key=f"key-{tenant}", feature=None, user=None,
                          now=now, zone=zone)  # fmt: skip
    limits = limit_holds(LIMITS, tenant=tenant, key=f"key-{tenant}", user=None,
                         ip="127.0.0.1", model="gpt-4o-mini", now=now)  # fmt: skip
    return [*scoped, *limits]


async def one(store: RedisBudgets, i: int, tenants: int, settler: Settler | None = None) -> None:
    tenant = f"t{i % tenants}"
    rid = uuid.uuid4().hex
    now = time.time()
    unsettled = entry(rid, tenant, 0, "unsettled")
    res = Reservation(rid, 3 * 10**9, tuple(request_holds(tenant, now)), now + 30, unsettled,
                      tokens=52)  # fmt: skip
    outcome = await store.reserve(res)
    assert outcome.ok, outcome.failed
    settled = [entry(rid, tenant, 2 * 10**9 + i)]
    if settler is None or not settler.submit(settled):
        await store.settle(settled)


async def cpu(ports: list[int]) -> tuple[float, dict[str, Any]]:
    """CPU seconds and ``INFO commandstats`` (calls and usec), summed over the nodes."""
    used, stats = 0.0, {}
    for port in ports:
        node = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            info, found = await node.info("cpu"), await node.info("commandstats")
        finally:
            await node.aclose()
        used += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        for name, value in found.items():
            total = stats.setdefault(name, {"calls": 0, "usec": 0})
            total["calls"] += value["calls"]
            total["usec"] += value["usec"]
    return used, stats


def detail(stats0: dict[str, Any], stats1: dict[str, Any], requests: int) -> None:
    """Per command (scripts' own commands included): calls and usec per request."""
    rows = []
    for k, v in stats1.items():
        if not k.startswith("cmdstat_") or k.startswith("cmdstat_info"):
            continue
        old = stats0.get(k, {"calls": 0, "usec": 0})
        calls, usec = v["calls"] - old["calls"], v["usec"] - old["usec"]
        if calls:
            rows.append((usec / requests, calls / requests, usec / calls, k[8:]))
    for us, calls, per_call, name in sorted(rows, reverse=True):
        print(
            f"{name:>16}: {us:7.2f} us/request {calls:6.2f} calls/request {per_call:6.2f} us/call"
        )


def connect(ports: list[int], concurrency: int, cluster: bool) -> aioredis.Redis:
    if cluster:  # the serving path's cluster client
        url = f"redis://127.0.0.1:{ports[0]}"
        return redis_client(url, StoreTimeouts(), concurrency + 4, cluster=True)
    # as the serving path's pool (``stores.scaled.redis_client``): calls beyond it wait
    pool = aioredis.BlockingConnectionPool(host="127.0.0.1", port=ports[0],
                                           max_connections=concurrency + 4)  # fmt: skip
    return aioredis.Redis.from_pool(pool)


async def run(
    ports: list[int],
    requests: int,
    concurrency: int,
    tenants: int,
    behind: bool,
    show: bool,
    cluster: bool = False,
) -> dict[str, float]:
    client = connect(ports, concurrency, cluster)
    store = RedisBudgets(client, f"bench-{uuid.uuid4().hex[:8]}")
    batches = [0]

    async def counted(entries: Any) -> None:
        batches[0] += 1
        await store.settle(entries)

    settler = Settler(counted, (ConnectionError,)) if behind else None
    try:
        for i in range(200):  # warm-up: scripts loaded, counters created
            await one(store, i, tenants)
        if settler is not None:
            settler.start()
        before, stats0 = await cpu(ports)
        started = time.perf_counter()
        queue = iter(range(requests))

        async def worker() -> None:
            for i in queue:
                await one(store, i, tenants, settler)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if settler is not None:
            await settler.stop()
        wall = time.perf_counter() - started
        after, stats1 = await cpu(ports)
    finally:
        await client.aclose()
    if show:
        detail(stats0, stats1, requests)
    script_us = sum(
        stats1[k]["usec"] - stats0.get(k, {}).get("usec", 0)
        for k in stats1
        if k in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")
    )
    calls = sum(
        stats1[k]["calls"] - stats0.get(k, {}).get("calls", 0)
        for k in stats1
        if k.startswith("cmdstat_") and not k.startswith("cmdstat_info")
    )
    return {
        "requests": requests,
        "cpu_us_per_request": (after - before) * 1e6 / requests,
        "script_us_per_request": script_us / requests,
        "commands_per_request": calls / requests,
        "requests_per_s": requests / wall,
        "entries_per_settle_call": requests / batches[0] if behind else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--port", type=int, default=0, help="an existing private redis-server")
    parser.add_argument(
        "--settle-behind",
        action="store_true",
        help="settle through the Settler, in batches, as the serving path",
    )
    parser.add_argument("--cluster", action="store_true", help="on a 3-node Redis Cluster")
    parser.add_argument("--detail", action="store_true", help="print INFO commandstats")
    args = parser.parse_args()
    params = (args.requests, args.concurrency, args.tenants, args.settle_behind, args.detail)
    if args.cluster:
        with redis_cluster(3) as ports:
            result = asyncio.run(run(ports, *params, cluster=True))
    elif args.port:
        result = asyncio.run(run([args.port], *params))
    else:
        with private_redis() as port:
            result = asyncio.run(run([port], *params))
    for name, value in result.items():
        print(f"{name:>24}: {value:,.1f}")


if __name__ == "__main__":
    main()
