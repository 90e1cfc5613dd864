"""The response cache in Redis (``CacheStore``), for replicas that share it: a hit stored by
one replica is found by every other.

Each tenant's keys live under a hash tag of their own, ``{<prefix>/c/<tenant>}``: one Redis
Cluster slot (its Lua scripts run there) and a key space no other tenant's lookups name. The
layout and the scripts are in ``stores.redis.cache_lua``: every write is one atomic script
that keeps the tenant's LRU index, expiry index and counters, and evicts the tenant's own
least recently used entries until it is within its limits.

Entries and vectors are sealed with AES-GCM under the tenant's own key
(``stores.redis.cache_crypto``); a blob that does not open (moved, corrupted, another
secret's) is a miss. Nothing in Redis reads as a prompt or an answer.

Every Redis failure or timeout raises ``CacheUnavailable``: the cache stage treats it as a
miss, never as a failed request.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

from redis.exceptions import RedisClusterException, RedisError

from farebox.core.cache import (
    CachedAnswer,
    CacheLimits,
    CacheUsage,
    Neighbour,
    Partition,
    client_namespace,
    storable,
)
from farebox.errors import CacheUnavailable
from farebox.stores.redis import cache_lua as lua
from farebox.stores.redis.cache_crypto import (
    CacheCipher,
    entry_aad,
    pack_answer,
    pack_vector,
    unpack_answer,
    unpack_vector,
    vector_aad,
)
from farebox.stores.redis.cache_vectors import VectorCopies
from farebox.stores.redis.cluster import redis_client
from farebox.stores.redis.scripts import Script
from farebox.stores.timeouts import StoreTimeouts

FAILURES: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)
SWEEP = 64  # expired entries a write removes, at most (the rest: by later writes)
PURGE_STEP = 500  # entries one purge script removes, at most
TRIES = 16  # nearest: candidates read, at most, before giving up on a context
CONNECTIONS = 32
DEFAULT_PREFIX = "farebox"


def token() -> str:
    """A random token for a script call (what a context's vectors changed under)."""
    return os.urandom(8).hex()


@contextlib.contextmanager
def unavailable() -> Iterator[None]:
    """Any Redis failure as ``CacheUnavailable``."""
    try:
        yield
    except FAILURES as exc:
        raise CacheUnavailable(f"the response cache's Redis failed: {exc!r}") from exc


class RedisCache:
    """``CacheStore`` in Redis. ``secret``: the server secret the tenants' keys derive from."""

    def __init__(
        self,
        client: Any,
        secret: bytes,
        clock: Callable[[], float] = time.time,
        *,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._cipher = CacheCipher(secret)
        self._clock = clock
        self._owns = owns_client
        self._prefix = DEFAULT_PREFIX
        self._slots: dict[str, str] = {}
        self._copies = VectorCopies()
        self._put = Script(client, lua.PUT)
        self._get = Script(client, lua.GET)
        self._add = Script(client, lua.ADD_VECTOR)
        self._usage = Script(client, lua.USAGE)
        self._purge = Script(client, lua.PURGE)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool,
        secret: bytes,
        connect_timeout_s: float = 1.0,
        command_timeout_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> RedisCache:
        """A cache with a client of its own (closed by ``close``), every command bounded."""
        bounds = StoreTimeouts(redis_connect_s=connect_timeout_s, redis_command_s=command_timeout_s)
        client = redis_client(url, bounds, CONNECTIONS, cluster=cluster)
        return cls(client, secret, clock, owns_client=True)

    async def open(self, prefix: str) -> None:
        """Use ``prefix`` for every key (a scaled store's ``{prefix}`` is taken without its
        braces). Talks to no one: a Redis that is down shows at the first lookup."""
        self._prefix = prefix[1:-1] if prefix.startswith("{") and prefix.endswith("}") else prefix
        self._slots.clear()
        self._copies.clear()

    def slot(self, tenant: str) -> str:
        """The hash tag (with braces) of ``tenant``'s keys."""
        tag = self._slots.get(tenant)
        if tag is None:
            if len(self._slots) > 100_000:
                self._slots.clear()
            tag = self._slots[tenant] = "{" + f"{self._prefix}/c/{quote(tenant, safe='')}" + "}"
        return tag

    def _member(self, partition: Partition, key: str) -> str:
        names = self._cipher.keys(partition.tenant)
        nsid = namespace_id(names, partition.namespace)
        return f"{nsid}:{names.name('key', partition.namespace, key)}"

    def _context(self, partition: Partition, context: str) -> str:
        names = self._cipher.keys(partition.tenant)
        nsid = namespace_id(names, partition.namespace)
        cid = names.name("ctx", partition.namespace, context)
        return f"{self.slot(partition.tenant)}:v:{nsid}:{cid}"

    # reads -----------------------------------------------------------------------------
    async def get(self, partition: Partition, key: str, now: float) -> CachedAnswer | None:
        return (await self.get_many(partition, [key], now))[0]

    async def get_many(
        self, partition: Partition, keys: Sequence[str], now: float
    ) -> list[CachedAnswer | None]:
        if not keys:
            return []
        s = self.slot(partition.tenant)
        members = [self._member(partition, k) for k in keys]
        with unavailable():
            blobs = await self._get(keys=[f"{s}:meta"], args=[s, token(), repr(now), *members])
        return [self._open(partition, k, b, now) for k, b in zip(keys, blobs, strict=True)]

    def _open(self, partition: Partition, key: str, blob: Any, now: float) -> CachedAnswer | None:
        if not blob:
            return None
        aad = entry_aad(partition.tenant, partition.namespace, key)
        plain = self._cipher.open(partition.tenant, aad, bytes(blob))
        answer = None if plain is None else unpack_answer(key, plain)
        return answer if answer is not None and answer.live(now) else None

    # writes ----------------------------------------------------------------------------
    async def put(
        self,
        partition: Partition,
        answers: Sequence[CachedAnswer],
        limits: CacheLimits,
        now: float,
    ) -> None:
        args: list[str | bytes] = []
        for a in storable(answers, limits, now):
            aad = entry_aad(partition.tenant, partition.namespace, a.key)
            blob = self._cipher.seal(partition.tenant, aad, pack_answer(a))
            px = max(1, math.ceil((a.expires_at - now) * 1000))
            args += [self._member(partition, a.key), blob, str(a.size), str(px), repr(a.expires_at)]
        if not args:
            return
        s = self.slot(partition.tenant)
        head = [s, token(), repr(now), str(limits.max_entries), str(limits.max_bytes), str(SWEEP)]
        with unavailable():
            await self._put(keys=[f"{s}:meta"], args=head + args)

    async def add_vector(
        self, partition: Partition, context: str, key: str, vector: bytes, now: float
    ) -> None:
        s = self.slot(partition.tenant)
        member = self._member(partition, key)
        aad = vector_aad(partition.tenant, partition.namespace, context, member)
        blob = self._cipher.seal(partition.tenant, aad, pack_vector(key, vector))
        with unavailable():
            await self._add(
                keys=[f"{s}:meta"],
                args=[s, token(), member, self._context(partition, context), blob],
            )

    async def nearest(
        self, partition: Partition, context: str, vector: bytes, now: float
    ) -> Neighbour | None:
        s, name = self.slot(partition.tenant), self._context(partition, context)
        with unavailable():
            changed = await self._client.hget(f"{s}:vgen", name)
        if changed is None:  # no vectors
            self._copies.forget(name)
            return None
        stacked = self._copies.fresh(name, changed)
        if stacked is None:
            with unavailable():
                stored = await self._client.hgetall(name)

            def opener(member: str, blob: bytes) -> tuple[str, bytes] | None:
                aad = vector_aad(partition.tenant, partition.namespace, context, member)
                plain = self._cipher.open(partition.tenant, aad, blob)
                return None if plain is None else unpack_vector(plain)

            stacked = self._copies.load(name, changed, stored, opener)
        swept = False
        for tried, (key, similarity) in enumerate(stacked.ranked(vector)):
            if tried == TRIES:
                break
            answer = await self._peek(partition, key, now)
            if answer is not None:
                return Neighbour(key, similarity, answer.prompt)
            if not swept:  # a dead entry's vector: sweep the expired (and their vectors) once
                swept = True
                await self._sweep(partition.tenant, now)
        return None

    async def _peek(self, partition: Partition, key: str, now: float) -> CachedAnswer | None:
        """The live entry under ``key``, not marked used."""
        s = self.slot(partition.tenant)
        with unavailable():
            blob = await self._client.get(f"{s}:e:{self._member(partition, key)}")
        return self._open(partition, key, blob, now)

    async def _sweep(self, tenant: str, now: float) -> tuple[int, int]:
        s = self.slot(tenant)
        with unavailable():
            got = await self._usage(
                keys=[f"{s}:meta"], args=[s, token(), repr(now), str(SWEEP * 16)]
            )
        return int(got[0]), int(got[1])

    # operations ------------------------------------------------------------------------
    async def usage(self, tenant: str) -> CacheUsage:
        entries, size = await self._sweep(tenant, self._clock())
        return CacheUsage(entries, size)

    async def purge(self, tenant: str, namespace: str | None = None) -> int:
        s = self.slot(tenant)
        if namespace is None:
            with unavailable():
                found = await self._client.smembers(f"{s}:nss")
            nsids = sorted(n.decode() for n in found)
        else:  # every partition of the client's namespace (whatever the plan's part)
            with unavailable():
                found = await self._client.smembers(f"{s}:nss")
            head = self._cipher.keys(tenant).name("ns", namespace) + "."
            nsids = sorted(n.decode() for n in found if n.decode().startswith(head))
        erased = 0
        for nsid in nsids:
            done = 0
            while not done:
                with unavailable():
                    n, done = await self._purge(
                        keys=[f"{s}:meta"],
                        args=[s, token(), nsid, str(PURGE_STEP), "1" if namespace is None else "0"],
                    )
                erased += int(n)
        return erased

    async def close(self) -> None:
        if self._owns:
            with contextlib.suppress(*FAILURES):
                await self._client.aclose()


def namespace_id(names: Any, namespace: str) -> str:
    """A partition's namespace id: the client's namespace's id, then the whole namespace's, so
    a purge of one client namespace finds every partition of it by prefix."""
    return f"{names.name('ns', client_namespace(namespace))}.{names.name('pp', namespace)}"
