"""Issue 18 on a real Redis Cluster (3 masters on free loopback ports, started by the test with
``bench.redis_cluster``; never the shared Redis): ``RedisBudgets`` works with redis-py's
cluster client unchanged, 100 tenants' counters spread over all three nodes, and the global
budget holds under concurrent tenants.

Skips when ``redis-server``/``redis-cli`` are not installed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from bench.redis_cluster import available, redis_cluster
from redis.asyncio.cluster import RedisCluster

from farebox.core.budgets import Hold
from farebox.stores.redis.budgets import RedisBudgets
from tests.contracts.builders import hold
from tests.test_redis_sharding import T0, reservation, settlement, tenant_holds

RACE = 10**15 + 7
WINNERS = 17


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[int]]:
    missing = available()
    if missing:
        pytest.skip(missing)
    with redis_cluster(3) as ports:
        yield ports


async def test_tenants_spread_over_every_node_and_limits_hold(cluster: list[int]) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster[0])
    try:
        store = RedisBudgets(client, f"fbxc-{uuid.uuid4().hex[:8]}")
        tenants = [f"tenant-{i}" for i in range(100)]

        async def one(i: int, tenant: str) -> None:
            on = tenant_holds(tenant, T0, ("cal", "rolling", "limits"))
            res = reservation(f"r{i}", 10**12, on, tenant, T0 + 30, tokens=5)
            assert (await store.reserve(res)).ok
            if i % 2:
                await store.settle([settlement(f"r{i}", tenant, 10**11, 3)])

        await asyncio.gather(*(one(i, t) for i, t in enumerate(tenants)))
        nodes = [RedisCluster(host="127.0.0.1", port=p) for p in cluster]
        sizes = [await client.dbsize(target_nodes=node) for node in client.get_primaries()]
        for n in nodes:
            await n.aclose()
        assert len(sizes) == 3 and all(size > 20 for size in sizes), sizes
        # reads and reclaim work across the slots
        [s] = await store.states(tenant_holds("tenant-1", T0, ("cal",)))
        assert (s.used, s.reserved) == (10**11, 0)
        reclaimed = await store.expired(T0 + 31)
        assert sorted(e.reservation_id or "" for e in reclaimed) == sorted(
            f"r{i}" for i in range(0, 100, 2)
        )
        [s] = await store.states(tenant_holds("tenant-0", T0, ("cal",)))
        assert (s.used, s.reserved) == (0, 0)
    finally:
        await client.aclose()


async def test_the_global_budget_is_never_overspent_on_a_cluster(cluster: list[int]) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster[0])
    try:
        store = RedisBudgets(client, f"fbxc-{uuid.uuid4().hex[:8]}")
        glob = hold("global:day", RACE * WINNERS + RACE - 1, T0, scope="global", tenant="")

        def holds_of(tenant: str) -> list[Hold]:
            return [hold(f"tenant:{tenant}:day", 10**18, T0, tenant=tenant), glob]

        tries = [(f"g{i}", f"t{i % 30}") for i in range(150)]
        outcomes = await asyncio.gather(*(
            store.reserve(reservation(rid, RACE, holds_of(t), t, T0 + 60)) for rid, t in tries
        ))  # fmt: skip
        won = [tries[i] for i, o in enumerate(outcomes) if o.ok]
        assert len(won) == WINNERS
        [g] = await store.states([glob])
        assert (g.used, g.reserved) == (0, WINNERS * RACE)
        states = await store.states([holds_of(f"t{i}")[0] for i in range(30)])
        assert sum(s.reserved for s in states) == WINNERS * RACE  # refusals were undone
        await store.settle([settlement(rid, t, RACE) for rid, t in won])
        [g] = await store.states([glob])
        assert (g.used, g.reserved) == (WINNERS * RACE, 0)
    finally:
        await client.aclose()


async def test_the_layout_check_and_migration_work_on_a_cluster(cluster: list[int]) -> None:
    """Every open runs ``ensure_layout``: on a cluster too (a new deployment just records the
    layout; an old one's counters move, whatever node their tenant slot is on)."""
    from farebox.stores.redis.migrate import LAYOUT, ensure_layout

    client = RedisCluster(host="127.0.0.1", port=cluster[0])
    try:
        fresh = RedisBudgets(client, f"fbxc-{uuid.uuid4().hex[:8]}")
        await ensure_layout(client, fresh.layout, lambda kid: _none())
        assert await client.get(fresh.layout.marker) == LAYOUT.encode()
        old = RedisBudgets(client, f"fbxc-{uuid.uuid4().hex[:8]}")
        home = old.key_prefix
        for i in range(20):
            await client.hset(f"{home}:used:tenant:t{i}:day", repr(T0), str(10 + i))
        await ensure_layout(client, old.layout, lambda kid: _none())
        states = await old.states([hold(f"tenant:t{i}:day", 100, T0, tenant=f"t{i}")
                                   for i in range(20)])  # fmt: skip
        assert [s.used for s in states] == [10 + i for i in range(20)]
        assert [k async for k in client.scan_iter(match=f"{home}:used:*")] == []
    finally:
        await client.aclose()


async def _none() -> str | None:
    return None
