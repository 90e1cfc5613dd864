"""The ``CacheStore`` contract, on every cache backend (in the process; Redis; a Redis
Cluster): entries by partition and key, expiry, per-tenant limits with LRU eviction that
never touches another tenant, purges, the semantic neighbour search and usage."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from farebox.core.cache import CacheLimits, CacheUsage, Partition, compose_namespace
from farebox.errors import CacheUnavailable
from tests.contracts.cache_backends import (
    CACHE_BACKENDS,
    SECRET,
    Clock,
    answer,
    opened_cache,
    prefix_keys,
    unit,
)

A, A2, B = Partition("acme"), Partition("acme", "team-1"), Partition("globex")
ROOMY = CacheLimits(max_entries=1000, max_bytes=10_000_000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=CACHE_BACKENDS)
async def cache(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Any]:
    url = None
    if request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_nodes").url
    async with opened_cache(request.param, clock, url) as c:
        yield c


def k(n: int) -> str:
    return f"{n:064x}"


async def test_get_put_and_replace(cache: Any, clock: Clock) -> None:
    now = clock.now
    assert await cache.get(A, k(1), now) is None
    first = answer(k(1), now, body=b'{"v":1}', prompt="hello")
    await cache.put(A, [first], ROOMY, now)
    assert await cache.get(A, k(1), now) == first
    second = answer(k(1), now, body=b'{"v":2}', cost=7)
    await cache.put(A, [second], ROOMY, now)
    assert await cache.get(A, k(1), now) == second
    assert await cache.usage("acme") == CacheUsage(1, second.size)


async def test_get_many_keeps_order(cache: Any, clock: Clock) -> None:
    now = clock.now
    stored = [answer(k(i), now, body=f'{{"i":{i}}}'.encode()) for i in (1, 3)]
    await cache.put(A, stored, ROOMY, now)
    got = await cache.get_many(A, [k(3), k(2), k(1), k(3)], now)
    assert got == [stored[1], None, stored[0], stored[1]]
    assert await cache.get_many(A, [], now) == []


async def test_partitions_are_apart(cache: Any, clock: Clock) -> None:
    now = clock.now
    await cache.put(A, [answer(k(1), now, body=b"acme")], ROOMY, now)
    assert await cache.get(A2, k(1), now) is None
    assert await cache.get(B, k(1), now) is None
    await cache.put(B, [answer(k(1), now, body=b"globex")], ROOMY, now)
    a, b = await cache.get(A, k(1), now), await cache.get(B, k(1), now)
    assert (a.body, b.body) == (b"acme", b"globex")


async def test_expired_entries_are_never_returned(cache: Any, clock: Clock) -> None:
    now = clock.now
    await cache.put(A, [answer(k(1), now, ttl=60), answer(k(2), now, ttl=600)], ROOMY, now)
    assert await cache.get(A, k(1), now + 59.9) is not None
    assert await cache.get(A, k(1), now + 60) is None
    assert await cache.get_many(A, [k(1), k(2)], now + 61) == [None, await cache.get(A, k(2), now)]
    clock.now = now + 61
    assert (await cache.usage("acme")).entries == 1  # the expired one is gone
    await cache.put(A, [answer(k(3), now, ttl=10)], ROOMY, now + 11)  # stored already dead
    assert await cache.get(A, k(3), now) is None


async def test_entry_limit_evicts_least_recently_used(cache: Any, clock: Clock) -> None:
    now = clock.now
    limits = CacheLimits(max_entries=3, max_bytes=10_000_000)
    for i in range(1, 4):
        await cache.put(A, [answer(k(i), now + i)], limits, now + i)
    assert await cache.get(A, k(1), now + 5) is not None  # 1 is now the most recent
    await cache.put(A, [answer(k(4), now + 6)], limits, now + 6)
    got = await cache.get_many(A2, [k(1)], now + 7) + await cache.get_many(
        A, [k(1), k(2), k(3), k(4)], now + 7
    )
    assert [g is not None for g in got] == [False, True, False, True, True]
    assert (await cache.usage("acme")).entries == 3


async def test_byte_limit_evicts_least_recently_used(cache: Any, clock: Clock) -> None:
    now = clock.now
    one = answer(k(1), now, body=b"x" * 1000)
    limits = CacheLimits(max_entries=100, max_bytes=one.size * 2 + 10)
    await cache.put(A, [one], limits, now)
    await cache.put(A2, [answer(k(2), now, body=b"y" * 1000)], limits, now + 1)
    assert await cache.get(A, k(1), now + 2) is not None
    await cache.put(A, [answer(k(3), now, body=b"z" * 1000)], limits, now + 3)
    assert await cache.get(A2, k(2), now + 4) is None  # the namespace's entry was the oldest
    assert await cache.get(A, k(1), now + 4) is not None
    assert await cache.get(A, k(3), now + 4) is not None
    usage = await cache.usage("acme")
    assert usage.entries == 2 and usage.bytes <= limits.max_bytes


async def test_a_tenant_filling_its_cache_never_evicts_another(cache: Any, clock: Clock) -> None:
    now = clock.now
    small = CacheLimits(max_entries=5, max_bytes=100_000)
    await cache.put(B, [answer(k(i), now) for i in range(5)], small, now)
    for i in range(40):
        await cache.put(A, [answer(k(1000 + i), now)], small, now + i)
    assert all(await cache.get_many(B, [k(i) for i in range(5)], now + 50))
    assert (await cache.usage("acme")).entries == 5
    assert (await cache.usage("globex")).entries == 5


async def test_an_oversized_answer_is_not_stored(cache: Any, clock: Clock) -> None:
    now = clock.now
    limits = CacheLimits(max_entries=10, max_bytes=500)
    await cache.put(A, [answer(k(1), now, body=b"small")], limits, now)
    await cache.put(A, [answer(k(2), now, body=b"x" * 600)], limits, now)
    assert await cache.get(A, k(2), now) is None
    assert await cache.get(A, k(1), now) is not None  # nothing was evicted for it
    assert (await cache.usage("acme")).entries == 1


async def test_purge_all_or_one_namespace(cache: Any, clock: Clock) -> None:
    now = clock.now
    await cache.put(A, [answer(k(1), now), answer(k(2), now)], ROOMY, now)
    await cache.put(A2, [answer(k(1), now)], ROOMY, now)
    await cache.put(B, [answer(k(1), now)], ROOMY, now)
    await cache.add_vector(A2, "ctx", k(1), unit(1, 0), now)
    assert await cache.purge("acme", "team-1") == 1
    assert await cache.get(A2, k(1), now) is None
    assert await cache.nearest(A2, "ctx", unit(1, 0), now) is None
    assert await cache.get(A, k(1), now) is not None
    assert await cache.purge("acme", "nobody") == 0
    assert await cache.purge("acme") == 2
    assert await cache.get_many(A, [k(1), k(2)], now) == [None, None]
    assert await cache.usage("acme") == CacheUsage(0, 0)
    assert await cache.get(B, k(1), now) is not None
    assert await cache.purge("acme") == 0
    await cache.put(A, [answer(k(9), now)], ROOMY, now)  # a purged tenant can cache again
    assert await cache.get(A, k(9), now) is not None


async def test_purge_of_a_client_namespace_reaches_every_partition_of_it(
    cache: Any, clock: Clock
) -> None:
    """With a plan partitioned by key or user, the client's namespace is one part of the
    partition's: a purge by the client's namespace erases it under every key and user."""
    now = clock.now
    parts = [("k:key_1", "team"), ("k:key_2", "team"), ("u:ann", "team"), ("k:key_1", "other")]
    for plan_part, client in parts:
        partition = Partition("acme", compose_namespace(plan_part, client))
        await cache.put(partition, [answer(k(1), now)], ROOMY, now)
        await cache.add_vector(partition, "ctx", k(1), unit(1, 0), now)
    await cache.put(Partition("acme", "team"), [answer(k(1), now)], ROOMY, now)
    assert await cache.purge("acme", "team") == 4
    for plan_part, client in parts:
        partition = Partition("acme", compose_namespace(plan_part, client))
        kept = client == "other"
        assert (await cache.get(partition, k(1), now) is not None) == kept
        assert (await cache.nearest(partition, "ctx", unit(1, 0), now) is not None) == kept
    assert await cache.usage("acme") == CacheUsage(1, (await cache.usage("acme")).bytes)


async def test_nearest_finds_the_most_similar_in_its_context_only(cache: Any, clock: Clock) -> None:
    now = clock.now
    await cache.put(A, [answer(k(i), now, prompt=f"q{i}") for i in range(3)], ROOMY, now)
    await cache.add_vector(A, "ctx", k(0), unit(1, 0, 0), now)
    await cache.add_vector(A, "ctx", k(1), unit(0.9, 0.1, 0), now)
    await cache.add_vector(A, "ctx", k(2), unit(0, 0, 1), now)
    near = await cache.nearest(A, "ctx", unit(1, 0.12, 0), now)
    assert near is not None and (near.key, near.prompt) == (k(1), "q1")
    assert near.similarity == pytest.approx(0.99997, abs=1e-3)
    exact = await cache.nearest(A, "ctx", unit(1, 0, 0), now)
    assert exact is not None and exact.key == k(0) and exact.similarity == pytest.approx(1.0)
    assert await cache.nearest(A, "other", unit(1, 0, 0), now) is None
    assert await cache.nearest(A2, "ctx", unit(1, 0, 0), now) is None
    assert await cache.nearest(B, "ctx", unit(1, 0, 0), now) is None


async def test_vectors_of_evicted_or_expired_entries_are_not_returned(
    cache: Any, clock: Clock
) -> None:
    now = clock.now
    limits = CacheLimits(max_entries=2, max_bytes=10_000_000)
    await cache.put(A, [answer(k(1), now, prompt="one", ttl=100)], limits, now)
    await cache.add_vector(A, "ctx", k(1), unit(1, 0), now)
    await cache.put(A, [answer(k(2), now, prompt="two", ttl=10)], limits, now + 1)
    await cache.add_vector(A, "ctx", k(2), unit(0, 1), now + 1)
    near = await cache.nearest(A, "ctx", unit(0.1, 1), now + 2)
    assert near is not None and near.key == k(2)
    # k(2) expires: the nearest live one is k(1), however far
    near = await cache.nearest(A, "ctx", unit(0.1, 1), now + 20)
    assert near is not None and near.key == k(1)
    await cache.put(
        A, [answer(k(3), now, prompt="3"), answer(k(4), now, prompt="4")], limits, now + 21
    )
    assert await cache.nearest(A, "ctx", unit(1, 0), now + 22) is None  # k(1) evicted
    # a vector for an entry that is not there is not indexed
    await cache.add_vector(A, "ctx", k(1), unit(1, 0), now + 23)
    assert await cache.nearest(A, "ctx", unit(1, 0), now + 23) is None


async def test_re_indexing_an_entry_moves_its_vector(cache: Any, clock: Clock) -> None:
    now = clock.now
    await cache.put(A, [answer(k(1), now, prompt="p")], ROOMY, now)
    await cache.add_vector(A, "c1", k(1), unit(1, 0), now)
    await cache.add_vector(A, "c2", k(1), unit(0, 1), now)
    assert await cache.nearest(A, "c1", unit(1, 0), now) is None
    near = await cache.nearest(A, "c2", unit(1, 0), now)
    assert near is not None and near.key == k(1) and near.similarity == pytest.approx(0.0)


async def test_usage_counts_entries_and_bytes(cache: Any, clock: Clock) -> None:
    now = clock.now
    assert await cache.usage("acme") == CacheUsage(0, 0)
    stored = [answer(k(i), now, body=b"b" * i, prompt="p" * i) for i in range(1, 4)]
    await cache.put(A, stored[:2], ROOMY, now)
    await cache.put(A2, stored[2:], ROOMY, now)
    assert await cache.usage("acme") == CacheUsage(3, sum(a.size for a in stored))
    assert await cache.usage("globex") == CacheUsage(0, 0)


# Redis failures: always CacheUnavailable (a miss for the stage), never a raw redis error ---
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def every_call_is_unavailable(cache: Any, now: float) -> None:
    calls = [
        cache.get(A, k(1), now),
        cache.get_many(A, [k(1), k(2)], now),
        cache.put(A, [answer(k(1), now)], ROOMY, now),
        cache.add_vector(A, "ctx", k(1), unit(1, 0), now),
        cache.nearest(A, "ctx", unit(1, 0), now),
        cache.usage("acme"),
        cache.purge("acme"),
        cache.purge("acme", "team-1"),
    ]
    for call in calls:
        with pytest.raises(CacheUnavailable):
            await call


async def test_a_redis_that_is_down_is_cache_unavailable(clock: Clock) -> None:
    from farebox.stores.redis.cache import RedisCache

    url = f"redis://127.0.0.1:{free_port()}"
    cache = RedisCache.from_url(url, cluster=False, secret=SECRET, connect_timeout_s=0.2)
    await cache.open("fbxdown")
    try:
        await every_call_is_unavailable(cache, clock.now)
    finally:
        await cache.close()


async def test_a_redis_that_stalls_is_cache_unavailable(clock: Clock) -> None:
    from farebox.stores.redis.cache import RedisCache

    held: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # accepts, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache.from_url(
        f"redis://127.0.0.1:{port}", cluster=False, secret=SECRET, command_timeout_s=0.1
    )
    await cache.open("fbxstall")
    try:
        await every_call_is_unavailable(cache, clock.now)
    finally:
        await cache.close()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


# replicas: two RedisCache on one Redis see one cache ----------------------------------------
@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
async def test_replicas_share_entries_and_see_each_others_vector_changes(
    request: pytest.FixtureRequest, backend: str, clock: Clock
) -> None:
    from farebox.stores.redis.cache import RedisCache

    url = request.getfixturevalue("redis_cluster_nodes").url if backend != "redis" else None
    now = clock.now
    async with opened_cache(backend, clock, url) as one:
        other = RedisCache.from_url(
            url or "redis://127.0.0.1:6379", cluster=url is not None, secret=SECRET, clock=clock
        )
        await other.open("{" + one._prefix + "}")  # as the scaled store's key prefix reads
        await one.put(
            A, [answer(k(1), now, prompt="p1"), answer(k(2), now, prompt="p2")], ROOMY, now
        )
        await one.add_vector(A, "ctx", k(1), unit(1, 0), now)
        assert (await other.get(A, k(1), now)).prompt == "p1"
        near = await other.nearest(A, "ctx", unit(0, 1), now)  # other keeps the vectors opened
        assert near is not None and near.key == k(1)
        await one.add_vector(A, "ctx", k(2), unit(0, 1), now)
        near = await other.nearest(A, "ctx", unit(0, 1), now)
        assert near is not None and near.key == k(2) and near.similarity == pytest.approx(1.0)
        assert await one.purge("acme") == 2
        assert await other.nearest(A, "ctx", unit(0, 1), now) is None
        await one.put(A, [answer(k(3), now, prompt="p3")], ROOMY, now)
        await one.add_vector(A, "ctx", k(3), unit(1, 0), now)
        near = await other.nearest(A, "ctx", unit(0, 1), now)
        assert near is not None and near.key == k(3)
        # a tenant's keys all live in its own slot (one hash tag)
        slot = one.slot("acme")
        keys = [key.decode() for key in await prefix_keys(one._client, one._prefix)]
        assert keys and all(key.startswith(slot + ":") for key in keys)
        await other.close()


# the extras: numpy (farebox[semantic]) only for vectors; cryptography (farebox[redis]) ----
async def test_without_numpy_the_exact_cache_works_and_vectors_name_the_extra(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    from farebox.errors import EmbedderUnavailable
    from farebox.stores.memory.cache import MemoryCache

    monkeypatch.setitem(sys.modules, "numpy", None)  # "import numpy" now fails
    cache = MemoryCache(clock)
    now = clock.now
    await cache.put(A, [answer(k(1), now)], ROOMY, now)
    assert await cache.get(A, k(1), now) is not None
    with pytest.raises(EmbedderUnavailable, match=r"farebox\[semantic\]"):
        await cache.add_vector(A, "ctx", k(1), b"\x00" * 16, now)


def test_without_cryptography_the_redis_cache_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from farebox.errors import ConfigError
    from farebox.stores.redis.cache_crypto import CacheCipher

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigError, match=r"farebox\[redis\]"):
        CacheCipher(SECRET)
