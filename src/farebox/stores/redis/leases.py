"""Finding expired leases across every tenant slot, with no per-request command on a shared
slot.

Each slot keeps its own lease set. ``{P}:tenants`` is a sorted set of the tenant slots that may
hold leases, scored by when a replica last registered the slot. A replica registers a tenant
slot (``ZADD``, keeping the later score) before its first reserve there, and again once its
registration is older than ``REFRESH_S``: one command per tenant per replica per minute, not
per request. The reclaimer visits the home slot and every registered slot; a slot whose lease
set it found empty is forgotten only if no replica has registered it for ``FORGET_S``,
checked and removed in one script.

Why no lease is ever lost: a lease is added to a tenant slot only by a replica whose
registration of that slot is younger than ``REFRESH_S`` (it registered, then reserved, within
one command timeout). Say the reclaimer found the slot's lease set empty, then forgot the slot,
and a lease was added to the slot after that look. Its replica registered the slot less than
``REFRESH_S`` (plus a command timeout and the clock skew between replicas) before adding it:
if that registration came before the forget, the slot's score was younger than ``FORGET_S``
and the forget spared it; if it came after, the slot is registered again. ``FORGET_S`` is ten
times ``REFRESH_S``, far more than a command timeout plus any sane clock skew. A lease added
before the look was seen by it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

REFRESH_S = 60.0
FORGET_S = 600.0
FAN_OUT = 64  # tenant slots reclaimed at once


class LeaseSlots:
    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        forget: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._key = key  # {P}:tenants
        self._forget = forget
        self._clock = clock
        self._registered: dict[str, float] = {}  # slot -> when this replica registered it

    def use_key(self, key: str) -> None:
        self._key = key
        self._registered.clear()

    async def register(self, slot: str) -> None:
        """Before a reserve in a tenant slot: make sure the reclaimer visits it."""
        now = self._clock()
        if now - self._registered.get(slot, -REFRESH_S) < REFRESH_S:
            return
        await self._client.zadd(self._key, {slot: now}, gt=True)
        if len(self._registered) > 100_000:
            self._registered.clear()
        self._registered[slot] = now

    async def slots(self) -> list[str]:
        raw = await self._client.zrange(self._key, 0, -1)
        return [s.decode() if isinstance(s, bytes) else str(s) for s in raw]

    async def forget(self, empty: Sequence[str]) -> None:
        """Forget the slots whose lease sets were found empty, unless registered lately."""
        if empty:
            before = repr(self._clock() - FORGET_S)
            await self._forget(keys=[self._key], args=[before, *empty])
