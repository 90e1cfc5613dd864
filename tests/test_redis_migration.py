"""Issue 18: a deployment whose Redis still holds the one-slot key layout keeps its budget
counters when it upgrades to the tenant-sharded layout (``stores.redis.migrate``), and refuses
to start while a replica of the old version may still hold reservations.

Needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379); skips without them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from farebox.errors import ConfigError
from farebox.stores.postgres.store import PostgresStore
from farebox.stores.redis.budgets import RedisBudgets
from farebox.stores.scaled import ScaledStore
from tests.contracts.backends import PG_DSN, drop_schema, require
from tests.contracts.builders import T0, hold, key, tenant
from tests.test_redis_sharding import drop_all

DAY = 86_400.0


@pytest.fixture
async def deployment() -> AsyncIterator[tuple[str, str, aioredis.Redis]]:
    require("Redis migration", ("PostgreSQL", 5432), ("Redis", 6379))
    schema, prefix = f"farebox_mig_{uuid.uuid4().hex[:12]}", f"fbxmig-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    pg = PostgresStore(PG_DSN, schema=schema, pool_min=1, pool_max=2)
    await pg.open()
    try:
        await pg.create_tenant(tenant("acme"))
        await pg.create_key(key("k1", "acme"))
        await pg.create_key(key("svc", None))
        await pg.close()
        yield schema, prefix, client
    finally:
        await drop_all(client, prefix)
        await drop_schema(schema)
        await client.aclose()


def store_for(schema: str, prefix: str, client: aioredis.Redis) -> ScaledStore:
    pg = PostgresStore(PG_DSN, schema=schema, pool_min=1, pool_max=2)
    return ScaledStore(pg, RedisBudgets(client, prefix), client)


async def old_counter(client: aioredis.Redis, prefix: str, name: str, used: dict[str, Any]) -> None:
    """A counter as the one-slot layout kept it."""
    home = "{" + prefix + "}"
    await client.hset(f"{home}:used:{name}", mapping=used)
    await client.hset(f"{home}:reserved:{name}", mapping=dict.fromkeys(used, 0))
    await client.zadd(f"{home}:buckets:{name}", {b: float(b) for b in used})


async def test_old_counters_are_moved_into_their_tenant_slots(
    deployment: tuple[str, str, aioredis.Redis],
) -> None:
    schema, prefix, client = deployment
    day = repr(T0)
    await old_counter(client, prefix, "tenant:acme:day", {day: 2**62 + 5, repr(T0 - DAY): 9})
    await old_counter(client, prefix, "key:k1:day", {day: 7})
    await old_counter(client, prefix, "key:svc:day", {day: 8})
    await old_counter(client, prefix, "global:day", {day: 11})
    await old_counter(client, prefix, "rl:key:k1:*:requests:63", {day: 3})
    await client.hset(f"{{{prefix}}}:res:old-settled", mapping={"state": "settled_late"})
    store = store_for(schema, prefix, client)
    await store.open()
    try:
        holds = [
            hold("tenant:acme:day", 2**63, T0, tenant="acme"),
            hold("key:k1:day", 100, T0, scope="key", tenant="acme"),
            hold("key:svc:day", 100, T0, scope="key", tenant=""),
            hold("global:day", 100, T0, scope="global", tenant=""),
            hold("tenant:acme:day", 2**63, T0 - DAY, tenant="acme"),
        ]
        states = await store.budget_states(holds)
        assert [(s.used, s.reserved) for s in states] == [
            (2**62 + 5, 0), (7, 0), (8, 0), (11, 0), (9, 0)
        ]  # fmt: skip
        home = "{" + prefix + "}"
        left = [k async for k in client.scan_iter(match=f"{home}:*")]
        names = sorted(k.decode().split(":", 1)[1] for k in left)
        assert names == ["c:global:day", "c:key:svc:day", "layout", "owner", "z:global:day",
                         "z:key:svc:day"]  # the old layout's keys are gone  # fmt: skip
    finally:
        await store.close()
    again = store_for(schema, prefix, client)  # the next open only reads the marker
    await again.open()
    await again.close()


async def test_an_old_replica_still_holding_reservations_stops_the_start(
    deployment: tuple[str, str, aioredis.Redis],
) -> None:
    schema, prefix, client = deployment
    await old_counter(client, prefix, "tenant:acme:day", {repr(T0): 5})
    await client.zadd(f"{{{prefix}}}:leases", {"in-flight": T0 + 30})
    store = store_for(schema, prefix, client)
    with pytest.raises(ConfigError, match="older replica"):
        await store.open()
    assert await client.hget(f"{{{prefix}}}:used:tenant:acme:day", repr(T0)) == b"5"  # kept
