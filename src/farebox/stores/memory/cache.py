"""THROWAWAY (stage helper): a minimal in-process ``CacheStore`` so the cache stage's tests run
before the store helper's ``MemoryCache`` lands; the lead replaces it at merge."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from struct import unpack

from farebox.core.cache import (
    CachedAnswer,
    CacheLimits,
    CacheUsage,
    Neighbour,
    Partition,
)


class MemoryCache:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tenants: dict[str, OrderedDict[tuple[str, str], CachedAnswer]] = {}
        self._vectors: dict[tuple[str, str, str], dict[str, tuple[bytes, str]]] = {}

    def _lru(self, tenant: str) -> OrderedDict[tuple[str, str], CachedAnswer]:
        return self._tenants.setdefault(tenant, OrderedDict())

    async def get(self, partition: Partition, key: str, now: float) -> CachedAnswer | None:
        lru = self._tenants.get(partition.tenant)
        if lru is None:
            return None
        answer = lru.get((partition.namespace, key))
        if answer is None or not answer.live(now):
            return None
        lru.move_to_end((partition.namespace, key))
        return answer

    async def get_many(
        self, partition: Partition, keys: Sequence[str], now: float
    ) -> list[CachedAnswer | None]:
        return [await self.get(partition, k, now) for k in keys]

    async def put(
        self,
        partition: Partition,
        answers: Sequence[CachedAnswer],
        limits: CacheLimits,
        now: float,
    ) -> None:
        lru = self._lru(partition.tenant)
        for answer in answers:
            if answer.size <= limits.max_bytes:
                lru[(partition.namespace, answer.key)] = answer
                lru.move_to_end((partition.namespace, answer.key))
        while lru and (
            len(lru) > limits.max_entries or sum(a.size for a in lru.values()) > limits.max_bytes
        ):
            (space, key), _ = lru.popitem(last=False)
            for (tenant, ns, _c), vectors in self._vectors.items():
                if tenant == partition.tenant and ns == space:
                    vectors.pop(key, None)

    async def add_vector(
        self, partition: Partition, context: str, key: str, vector: bytes, now: float
    ) -> None:
        answer = await self.get(partition, key, now)
        prompt = answer.prompt if answer is not None else ""
        space = (partition.tenant, partition.namespace, context)
        self._vectors.setdefault(space, {})[key] = (vector, prompt)

    async def nearest(
        self, partition: Partition, context: str, vector: bytes, now: float
    ) -> Neighbour | None:
        found = self._vectors.get((partition.tenant, partition.namespace, context)) or {}
        best: Neighbour | None = None
        mine = unpack(f"<{len(vector) // 4}f", vector)
        for key, (other, prompt) in found.items():
            answer = await self.get(partition, key, now)
            if answer is None:
                continue
            theirs = unpack(f"<{len(other) // 4}f", other)
            score = sum(a * b for a, b in zip(mine, theirs, strict=False))
            if best is None or score > best.similarity:
                best = Neighbour(key, score, prompt)
        return best

    async def usage(self, tenant: str) -> CacheUsage:
        lru = self._tenants.get(tenant) or OrderedDict()
        return CacheUsage(len(lru), sum(a.size for a in lru.values()))

    async def purge(self, tenant: str, namespace: str | None = None) -> int:
        lru = self._tenants.get(tenant) or OrderedDict()
        gone = [k for k in lru if namespace is None or k[0] == namespace]
        for k in gone:
            del lru[k]
        return len(gone)

    async def close(self) -> None:
        self._tenants.clear()
