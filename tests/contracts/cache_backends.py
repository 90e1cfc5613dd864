"""The ``CacheStore`` backends the cache contracts run against, built fresh for one test:
``MemoryCache``, and ``RedisCache`` on the shared Redis (127.0.0.1:6379) and on the test
session's Redis Cluster (``tests.cluster_fixture``), each under a random key prefix of its own
whose keys are removed afterwards (only those). Without Redis the Redis variants skip, loudly,
unless ``FAREBOX_REQUIRE_SERVICES=1`` (then they fail), as every contract suite does.

``Clock`` is the caches' clock: tests move it by hand and pass ``clock.now`` to every call.
It starts at the real time, so the Redis TTLs the entries get are sensible.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from farebox.core.cache import CachedAnswer
from farebox.stores.memory.cache import MemoryCache
from tests.contracts.backends import require

SECRET = b"farebox-test-secret-0123456789abcdef"
CACHE_BACKENDS = ("memory", "redis", "redis-cluster")


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def redis_client(cluster_url: str | None) -> Any:
    if cluster_url is None:
        import redis.asyncio as aioredis

        return aioredis.Redis(host="127.0.0.1", port=6379)
    from farebox.stores.redis.cluster import BoundedCluster

    return BoundedCluster.from_url(cluster_url, limit=16, wait_s=2.0)


async def prefix_keys(client: Any, prefix: str) -> list[bytes]:
    """Every key under ``prefix`` (on every node of a cluster)."""
    return [k async for k in client.scan_iter(match=f"{{{prefix}/*", count=1000)]


@contextlib.asynccontextmanager
async def opened_cache(
    name: str, clock: Clock, cluster_url: str | None = None, secret: bytes = SECRET
) -> AsyncIterator[Any]:
    """The backend ``name``, open; its Redis keys removed afterwards."""
    if name == "memory":
        cache = MemoryCache(clock)
        yield cache
        await cache.close()
        return
    if name == "redis":
        require("Redis response cache", ("Redis", 6379))
    from farebox.stores.redis.cache import RedisCache

    client = redis_client(cluster_url)
    prefix = f"fbxcache{uuid.uuid4().hex[:12]}"
    cache = RedisCache(client, secret, clock)
    await cache.open(prefix)
    try:
        yield cache
    finally:
        for key in await prefix_keys(client, prefix):
            await client.delete(key)
        await cache.close()
        await client.aclose()


def answer(
    key: str,
    now: float,
    *,
    ttl: float = 3600.0,
    body: bytes = b'{"id":"chatcmpl-1"}',
    prompt: str = "",
    cost: int = 1_000_000,
) -> CachedAnswer:
    return CachedAnswer(
        key=key,
        kind="chat",
        body=body,
        model_served="gpt-4o-mini",
        provider="openai",
        cost=cost,
        revenue=cost * 2,
        input_tokens=12,
        output_tokens=34,
        created_at=now,
        expires_at=now + ttl,
        prompt=prompt,
    )


def unit(*values: float) -> bytes:
    """An L2-normalised float32 vector as the caches take it."""
    import numpy as np

    v = np.asarray(values, dtype=np.float32)
    return (v / np.linalg.norm(v)).astype("<f4").tobytes()
