"""The response cache in the process (``CacheStore``): the default backend.

Each tenant has an object of its own (``TenantCache``): its entries in one LRU (an
``OrderedDict`` keyed by ``(namespace, key)``, oldest use first), its byte count, and one
``VectorMatrix`` per ``(namespace, semantic context)``. Nothing is shared between tenants, so
no lookup can see another tenant's entries, and a tenant over its limits evicts only its own
least recently used ones. Entries past ``expires_at`` are never returned: a lookup that meets
one drops it, ``usage`` sweeps them.

Everything happens on the event loop without awaiting: a hit is a few dictionary operations.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from farebox.core.cache import (
    CachedAnswer,
    CacheLimits,
    CacheUsage,
    Neighbour,
    Partition,
    client_namespace,
    storable,
)
from farebox.stores.vectors import VectorMatrix

Slot = tuple[str, str]  # (namespace, key) or (namespace, context)


class TenantCache:
    """One tenant's entries and vectors."""

    __slots__ = ("entries", "bytes", "matrices", "indexed")

    def __init__(self) -> None:
        self.entries: OrderedDict[Slot, CachedAnswer] = OrderedDict()
        self.bytes = 0
        self.matrices: dict[Slot, VectorMatrix] = {}
        self.indexed: dict[Slot, str] = {}  # (namespace, key) -> the context of its vector

    def drop(self, slot: Slot) -> CachedAnswer | None:
        """Remove an entry and its vector."""
        answer = self.entries.pop(slot, None)
        if answer is not None:
            self.bytes -= answer.size
        context = self.indexed.pop(slot, None)
        if context is not None:
            self.drop_vector(slot, context)
        return answer

    def drop_vector(self, slot: Slot, context: str) -> None:
        """Remove an entry's vector from ``context`` (and the context, left empty)."""
        where = (slot[0], context)
        matrix = self.matrices.get(where)
        if matrix is not None:
            matrix.remove(slot[1])
            if not len(matrix):
                del self.matrices[where]

    def evict(self, limits: CacheLimits) -> None:
        """Drop the least recently used entries until within ``limits``."""
        entries = self.entries
        while entries and (len(entries) > limits.max_entries or self.bytes > limits.max_bytes):
            self.drop(next(iter(entries)))

    def sweep(self, now: float) -> None:
        for slot in [s for s, a in self.entries.items() if not now < a.expires_at]:
            self.drop(slot)


class MemoryCache:
    """``CacheStore`` in the process. ``clock``: what ``usage`` sweeps expired entries by."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tenants: dict[str, TenantCache] = {}

    async def get(self, partition: Partition, key: str, now: float) -> CachedAnswer | None:
        tenant = self._tenants.get(partition.tenant)
        if tenant is None:
            return None
        slot = (partition.namespace, key)
        answer = tenant.entries.get(slot)
        if answer is None:
            return None
        if now < answer.expires_at:
            tenant.entries.move_to_end(slot)
            return answer
        tenant.drop(slot)
        return None

    async def get_many(
        self, partition: Partition, keys: Sequence[str], now: float
    ) -> list[CachedAnswer | None]:
        return [await self.get(partition, key, now) for key in keys]

    async def put(
        self,
        partition: Partition,
        answers: Sequence[CachedAnswer],
        limits: CacheLimits,
        now: float,
    ) -> None:
        fits = storable(answers, limits, now)
        if not fits:
            return
        tenant = self._tenants.get(partition.tenant)
        if tenant is None:
            tenant = self._tenants[partition.tenant] = TenantCache()
        entries, ns = tenant.entries, partition.namespace
        for answer in fits:
            slot = (ns, answer.key)
            old = entries.pop(slot, None)
            if old is not None:
                tenant.bytes -= old.size
            entries[slot] = answer
            tenant.bytes += answer.size
        tenant.evict(limits)

    async def add_vector(
        self, partition: Partition, context: str, key: str, vector: bytes, now: float
    ) -> None:
        tenant = self._tenants.get(partition.tenant)
        slot = (partition.namespace, key)
        if tenant is None or slot not in tenant.entries:
            return  # evicted (or never stored): its vector would point at nothing
        where = (partition.namespace, context)
        before = tenant.indexed.get(slot)
        if before is not None and before != context:
            tenant.drop_vector(slot, before)
        matrix = tenant.matrices.get(where)
        dim = len(vector) // 4
        if matrix is None or matrix.dim != dim:  # a new context (or another embedder's)
            if matrix is not None:
                for k in [k for k, c in tenant.indexed.items() if (k[0], c) == where]:
                    del tenant.indexed[k]
            matrix = tenant.matrices[where] = VectorMatrix(dim)
        matrix.add(key, vector)
        tenant.indexed[slot] = context

    async def nearest(
        self, partition: Partition, context: str, vector: bytes, now: float
    ) -> Neighbour | None:
        tenant = self._tenants.get(partition.tenant)
        if tenant is None:
            return None
        matrix = tenant.matrices.get((partition.namespace, context))
        if matrix is None:
            return None
        found, dead = None, []
        for key, similarity in matrix.ranked(vector):
            answer = tenant.entries.get((partition.namespace, key))
            if answer is not None and now < answer.expires_at:
                found = Neighbour(key, similarity, answer.prompt)
                break
            dead.append(key)
        for key in dead:  # after the search: the matrix may be compacted
            tenant.drop((partition.namespace, key))
        return found

    async def usage(self, tenant: str) -> CacheUsage:
        cache = self._tenants.get(tenant)
        if cache is None:
            return CacheUsage(0, 0)
        cache.sweep(self._clock())
        return CacheUsage(len(cache.entries), cache.bytes)

    async def purge(self, tenant: str, namespace: str | None = None) -> int:
        cache = self._tenants.get(tenant)
        if cache is None:
            return 0
        if namespace is None:
            del self._tenants[tenant]
            return len(cache.entries)
        slots = [s for s in cache.entries if client_namespace(s[0]) == namespace]
        for slot in slots:
            cache.drop(slot)
        for where in [w for w in cache.matrices if client_namespace(w[0]) == namespace]:
            del cache.matrices[where]
        if not cache.entries:
            del self._tenants[tenant]
        return len(slots)

    async def close(self) -> None:
        self._tenants.clear()
