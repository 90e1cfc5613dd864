"""Isolation, attacked (issue 21, acceptance 1): over random tenants, namespaces, prompts
(identical and near-identical ones across partitions) and sequences of stores, lookups and
searches, on the in-process cache and on Redis, a lookup (``get``, ``get_many`` and
``nearest``) only ever returns an entry stored under the same partition. And a Redis blob
copied under another tenant's (or namespace's) key does not open: a miss."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.cache import CacheLimits, Partition, exact_key
from tests.contracts.backends import require
from tests.contracts.cache_backends import Clock, answer, opened_cache, unit

TENANTS = st.sampled_from(["acme", "globex", "initech", "a{b}c", "ümlaut"])
NAMESPACES = st.sampled_from(["", "team-1", "team-2", "user:42"])
PROMPTS = st.sampled_from(
    ["turn dark mode on", "turn dark mode off", "Turn dark mode on", "what is 2+2", "hi"]
)
OPS = st.lists(
    st.tuples(st.sampled_from(["put", "get", "near"]), TENANTS, NAMESPACES, PROMPTS),
    min_size=1,
    max_size=25,
)
LIMITS = CacheLimits(max_entries=6, max_bytes=100_000)


def vector_of(prompt: str) -> bytes:
    """Near-identical prompts get near-identical vectors (first letters weigh most)."""
    digest = hashlib.sha256(prompt.lower().encode()).digest()
    return unit(1.0, *(b / 2550 for b in digest[:7]))


def key_of(prompt: str) -> str:
    """A partition-blind key (the real ones begin with the partition): the stores must keep
    partitions apart even when their keys collide."""
    return exact_key(Partition(""), "chat", {"messages": [{"role": "user", "content": prompt}]})


async def run(cache: Any, clock: Clock, ops: list[tuple[str, str, str, str]]) -> None:
    now = clock.now
    for op, tenant, namespace, prompt in ops:
        p = Partition(tenant, namespace)
        key = key_of(prompt)
        now += 1
        if op == "put":
            body = json.dumps({"partition": p.label, "prompt": prompt}).encode()
            await cache.put(p, [answer(key, now, body=body, prompt=prompt)], LIMITS, now)
            await cache.add_vector(p, "ctx", key, vector_of(prompt), now)
        elif op == "get":
            for got in [await cache.get(p, key, now), *await cache.get_many(p, [key], now)]:
                assert got is None or json.loads(got.body)["partition"] == p.label
        else:
            near = await cache.nearest(p, "ctx", vector_of(prompt), now)
            if near is not None:
                got = await cache.get(p, near.key, now)
                assert got is not None and json.loads(got.body)["partition"] == p.label


@pytest.mark.parametrize("backend", ["memory", "redis"])
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_a_lookup_only_returns_its_own_partitions_entries(
    backend: str, ops: list[tuple[str, str, str, str]]
) -> None:
    if backend == "redis":
        require("Redis response cache", ("Redis", 6379))

    async def example() -> None:
        clock = Clock()
        async with opened_cache(backend, clock) as cache:
            await run(cache, clock, ops)

    asyncio.run(example())


async def test_a_blob_copied_under_another_partition_does_not_open() -> None:
    require("Redis response cache", ("Redis", 6379))
    clock = Clock()
    now = clock.now
    async with opened_cache("redis", clock) as cache:
        client = cache._client
        acme, globex, team = Partition("acme"), Partition("globex"), Partition("acme", "team-1")
        key = key_of("what is 2+2")
        await cache.put(acme, [answer(key, now, body=b"acme's answer")], LIMITS, now)
        await cache.add_vector(acme, "ctx", key, unit(1, 0), now)
        for victim in (globex, team):
            # a real entry there, so the victim's indexes know the key ...
            await cache.put(victim, [answer(key, now, body=b"victim's")], LIMITS, now)
            await cache.add_vector(victim, "ctx", key, unit(0, 1), now)
            # ... then acme's blobs copied over the victim's
            src = f"{cache.slot('acme')}:e:{cache._member(acme, key)}"
            dst = f"{cache.slot(victim.tenant)}:e:{cache._member(victim, key)}"
            await client.set(dst, await client.get(src), keepttl=True)
            vectors = await client.hgetall(cache._context(acme, "ctx"))
            (blob,) = vectors.values()
            await client.hset(cache._context(victim, "ctx"), cache._member(victim, key), blob)
            assert await cache.get(victim, key, now) is None
            assert await cache.get_many(victim, [key], now) == [None]
            assert await cache.nearest(victim, "ctx", unit(1, 0), now) is None
        got = await cache.get(acme, key, now)
        assert got is not None and got.body == b"acme's answer"
