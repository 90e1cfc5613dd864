"""Issue 18, Redis CPU per request on a cluster: a settle batch runs one script per node, not
one per slot (``stores.redis.batching``), and a stale slot map (a slot that moved since the
client last looked) still settles every entry exactly once.

On the session's 3-node Redis Cluster (``tests.cluster_fixture``, free loopback ports, never
the shared Redis): skipped without ``redis-server``, failed with FAREBOX_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from farebox.core.budgets import Hold
from farebox.stores.redis.batching import NodeScripts
from farebox.stores.redis.budgets import RedisBudgets
from farebox.stores.redis.hot import SETTLE, SETTLE_NODE
from tests.cluster_fixture import Cluster
from tests.test_redis_sharding import T0, reservation, settlement, tenant_holds

KINDS = ("cal", "rolling", "limits")
COST = 10**11


@pytest.fixture
async def client(redis_cluster_nodes: Cluster) -> AsyncIterator[RedisCluster]:
    c = RedisCluster(host="127.0.0.1", port=redis_cluster_nodes.ports[0])
    try:
        yield c
    finally:
        await c.aclose()


def new_store(client: RedisCluster) -> RedisBudgets:
    return RedisBudgets(client, f"fbxcs-{uuid.uuid4().hex[:8]}")


def node_of(client: RedisCluster, store: RedisBudgets, tenant: str) -> ClusterNode:
    return client.nodes_manager.get_node_from_slot(key_slot(store.layout.slot(tenant).encode()))


async def evalsha_calls(ports: list[int]) -> dict[int, int]:
    """``EVALSHA`` calls each node ran so far (``INFO commandstats``)."""
    out = {}
    for port in ports:
        node = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            stats = await node.info("commandstats")
        finally:
            await node.aclose()
        out[port] = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return out


async def reserve_all(store: RedisBudgets, tenants: list[str], tag: str) -> None:
    for t in tenants:
        res = reservation(f"{tag}-{t}", 10**12, tenant_holds(t, T0, KINDS), t, T0 + 30, tokens=5)
        assert (await store.reserve(res)).ok


async def assert_settled_once(store: RedisBudgets, tenants: list[str], times: int) -> None:
    """Every tenant's counters: ``times`` settles of ``COST`` spent, nothing left held."""
    holds: list[Hold] = [h for t in tenants for h in tenant_holds(t, T0, KINDS)]
    for s in await store.states(holds):
        assert s.reserved == 0, s
        if s.hold.unit == "usd":
            assert s.used == times * COST, s
        elif s.hold.unit == "requests" and s.hold.key.endswith(":requests"):
            assert s.used == times, s


async def test_a_settle_batch_runs_one_script_per_node(
    client: RedisCluster, redis_cluster_nodes: Cluster
) -> None:
    store = new_store(client)
    tenants = [f"t{i}" for i in range(30)]
    await reserve_all(store, tenants, "warm")  # and the node scripts loaded on every node
    await store.settle([settlement(f"warm-{t}", t, COST, 3) for t in tenants])
    await reserve_all(store, tenants, "r")
    per_node: dict[str, set[str]] = {}
    for t in tenants:
        per_node.setdefault(node_of(client, store, t).name, set()).add(store.layout.slot(t))
    assert len(per_node) == 3 and all(len(s) > 1 for s in per_node.values()), per_node
    before = await evalsha_calls(redis_cluster_nodes.ports)
    await store.settle([settlement(f"r-{t}", t, COST, 3) for t in tenants])
    after = await evalsha_calls(redis_cluster_nodes.ports)
    assert {p: after[p] - before[p] for p in after} == dict.fromkeys(after, 1)
    await assert_settled_once(store, tenants, 2)


async def test_a_replica_that_did_not_reserve_settles_from_the_records(
    client: RedisCluster, redis_cluster_nodes: Cluster
) -> None:
    """Reclaim settles entries reserved elsewhere: each node's script reads the stored
    records (and tries the home slot, which holds none of these), on nodes that forgot every
    script (a restart): each loads it again."""
    store = new_store(client)
    tenants = [f"t{i}" for i in range(30)]
    await reserve_all(store, tenants, "r")
    for port in redis_cluster_nodes.ports:
        node = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            await node.script_flush()
        finally:
            await node.aclose()
    other = RedisBudgets(client, store.layout.prefix)
    await other.settle([settlement(f"r-{t}", t, COST, 3) for t in tenants])
    await assert_settled_once(store, tenants, 1)
    sha = hashlib.sha1(SETTLE_NODE.encode()).hexdigest()
    for node in client.get_primaries():  # the node scripts ran (not only the per-slot ones)
        assert await client.execute_command("SCRIPT EXISTS", sha, target_nodes=node) == [1]
    await other.settle([settlement(f"r-{t}", t, COST, 3) for t in tenants])  # once only
    await store.settle([settlement(f"r-{t}", t, COST, 3) for t in tenants])
    await assert_settled_once(store, tenants, 1)


async def test_a_server_that_refuses_the_flag_runs_the_script_without_it(
    client: RedisCluster, redis_cluster_nodes: Cluster
) -> None:
    """As Redis before 7 refuses ``#!lua flags=...`` (here: a flag no Redis knows), the node
    batches run ``SETTLE`` itself, still one script per node."""
    store = new_store(client)
    nodes = store._nodes = NodeScripts(client, "#!lua flags=no-such-flag\n" + SETTLE)
    tenants = [f"t{i}" for i in range(30)]
    await reserve_all(store, tenants, "warm")
    await store.settle([settlement(f"warm-{t}", t, COST, 3) for t in tenants])
    assert nodes.script == SETTLE
    await reserve_all(store, tenants, "r")
    before = await evalsha_calls(redis_cluster_nodes.ports)
    await store.settle([settlement(f"r-{t}", t, COST, 3) for t in tenants])
    after = await evalsha_calls(redis_cluster_nodes.ports)
    assert {p: after[p] - before[p] for p in after} == dict.fromkeys(after, 1)
    await assert_settled_once(store, tenants, 2)


async def test_a_stale_slot_map_still_settles_each_entry_once(
    client: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's map sends one tenant's slot to a node that does not serve it, last in that
    node's batch: the node script settles the entries before it, fails there, and the node's
    share is settled again per slot (a MOVED redirect for the misplaced one)."""
    store = new_store(client)
    tenants = [f"t{i}" for i in range(30)]
    await reserve_all(store, tenants, "r")
    moved = tenants[-1]
    home = node_of(client, store, moved)
    wrong = next(n for n in client.get_primaries() if n.name != home.name)
    assert sum(node_of(client, store, t).name == wrong.name for t in tenants) > 1
    client.nodes_manager.slots_cache[key_slot(store.layout.slot(moved).encode())] = [wrong]
    with caplog.at_level(logging.DEBUG, "farebox.stores.redis"):
        await store.settle([settlement(f"r-{t}", t, COST, 3) for t in tenants])
    assert [r.message for r in caplog.records if "non local key" in r.message], caplog.text
    await assert_settled_once(store, tenants, 1)
    assert node_of(client, store, moved).name == home.name  # the redirect fixed the map


@contextmanager
def moved_slot(ports: list[int], slot: int, target: int) -> Iterator[None]:
    """Move ``slot`` and its keys to the node on port ``target`` (as a resharding does), and
    back to where it was on the way out."""
    nodes = {p: redis.Redis(host="127.0.0.1", port=p) for p in ports}
    try:
        source = next(p for p, n in nodes.items() if n.cluster("countkeysinslot", slot) > 0)
        move(nodes, slot, source, target)
        try:
            yield
        finally:
            move(nodes, slot, target, source)
    finally:
        for n in nodes.values():
            n.close()


def move(nodes: dict[int, redis.Redis], slot: int, source: int, target: int) -> None:
    src, dst = nodes[source], nodes[target]
    src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    for port in (target, source, *(p for p in nodes if p not in (source, target))):
        nodes[port].execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)


async def test_a_slot_moved_by_a_resharding_still_settles_each_entry_once(
    client: RedisCluster, redis_cluster_nodes: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store(client)
    tenants = [f"t{i}" for i in range(30)]
    await reserve_all(store, tenants, "r")
    moved = tenants[len(tenants) // 2]
    home = node_of(client, store, moved)
    target = next(n for n in client.get_primaries() if n.name != home.name)
    slot = key_slot(store.layout.slot(moved).encode())
    with moved_slot(redis_cluster_nodes.ports, slot, target.port):
        assert node_of(client, store, moved).name == home.name  # the client's map is stale
        with caplog.at_level(logging.DEBUG, "farebox.stores.redis"):
            await store.settle([settlement(f"r-{t}", t, COST, 3) for t in tenants])
        assert [r.message for r in caplog.records if "non local key" in r.message], caplog.text
        await assert_settled_once(store, tenants, 1)
        assert node_of(client, store, moved).name == target.name
