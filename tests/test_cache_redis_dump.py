"""A stolen Redis dump holds no readable prompt or answer (issue 21, acceptance 1): after
storing answers with distinctive prompts, answers and namespaces (and their vectors), every
key of the cache's prefix is read raw (``DUMP`` and, by type, ``GET``, ``HGETALL``,
``ZRANGE``, ``SMEMBERS``) and no piece of any of them appears, in the values or in the key
names. Nor does any request key (a hash a thief could compute from a guessed prompt)."""

from __future__ import annotations

import json
from typing import Any

from farebox.core.cache import CacheLimits, Partition, exact_key
from tests.contracts.backends import require
from tests.contracts.cache_backends import Clock, answer, opened_cache, prefix_keys, unit

SECRETS = [
    ("acme", "payroll-q3", "What was Zanzibar Holdings' PLATYPUS-7731 revenue?", "Quetzal 4.2M"),
    ("acme", "", "Summarise the memo about Project Nightjar-0042", "Nightjar ships Xylophone"),
    ("globex", "legal", "Is clause Wombat-19 enforceable in Ruritania?", "Marzipan verdict"),
]
LIMITS = CacheLimits(max_entries=100, max_bytes=1_000_000)


def pieces(text: str) -> list[bytes]:
    """Every 8-character piece of ``text`` (a plaintext leak shows at least one)."""
    raw = text.encode()
    return [raw[i : i + 8] for i in range(0, max(1, len(raw) - 7))]


async def raw_values(client: Any, key: bytes) -> list[bytes]:
    kind = (await client.type(key)).decode()
    out = [await client.dump(key) or b""]
    if kind == "string":
        out.append(await client.get(key))
    elif kind == "hash":
        for f, v in (await client.hgetall(key)).items():
            out += [f, v]
    elif kind == "zset":
        out += [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
    elif kind == "set":
        out += list(await client.smembers(key))
    else:
        raise AssertionError(f"unexpected key type {kind} at {key!r}")
    return out


async def test_a_redis_dump_holds_no_plaintext() -> None:
    require("Redis response cache", ("Redis", 6379))
    clock = Clock()
    now = clock.now
    async with opened_cache("redis", clock) as cache:
        client, needles = cache._client, []
        for i, (tenant, namespace, prompt, text) in enumerate(SECRETS):
            p = Partition(tenant, namespace)
            key = exact_key(p, "chat", {"messages": [{"role": "user", "content": prompt}]})
            body = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
            await cache.put(p, [answer(key, now, body=body, prompt=prompt)], LIMITS, now)
            await cache.add_vector(p, f"context-{i}", key, unit(1, i), now)
            assert (await cache.get(p, key, now)).body == body  # stored, and readable by us
            needles += pieces(prompt) + pieces(text) + [key.encode(), key[:16].encode()]
            needles.append(f"context-{i}".encode())
            if namespace:
                needles.append(namespace.encode())
        keys = await prefix_keys(client, cache._prefix)
        assert len(keys) >= 10  # entries, vectors, indexes, counters
        for name in keys:
            values = [name, *await raw_values(client, name)]
            for needle in needles:
                assert not any(needle in v for v in values), (needle, name)
