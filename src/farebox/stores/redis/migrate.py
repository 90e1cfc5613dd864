"""Moving a deployment's counters from the one-slot key layout (before issue 18) to the
tenant-sharded one (``stores.redis.layout``), once, on open.

The old layout kept everything under ``{P}``: ``{P}:used:<counter>`` and
``{P}:reserved:<counter>`` (hashes, bucket -> amount), ``{P}:buckets:<counter>`` (a sorted
set), ``{P}:res:<id>`` and ``{P}:leases``. Dropping those keys would forget this month's
spend and let every tenant spend its budget again, so a deployment that still has them is
migrated before it serves:

- under a lock (``{P}:migrating``, ``SET NX`` with a TTL), so one replica migrates and the
  others wait for it;
- only when no old reservation is in flight (``{P}:leases`` is empty): a replica of the old
  version may still be running and writing old keys. Otherwise start-up stops with a
  ``ConfigError`` saying so (stop the old replicas; their leases expire after
  ``budgets.lease_s``; start again);
- budget counters (``tenant:``, ``key:``, ``feature:``, ``user:`` and ``global:``) are copied
  into their tenant's slot (a key's tenant comes from PostgreSQL); rate-limit counters
  (``rl:``) are dropped: their windows are minutes long and hold nothing once no reservation
  is in flight; a counter of a key PostgreSQL no longer knows is dropped too (the key is gone,
  and so are its requests);
- then the old keys are deleted and ``{P}:layout`` records the new layout, so later opens cost
  one ``GET``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from farebox.errors import ConfigError
from farebox.stores.redis.layout import Layout

LAYOUT = "2"
LOCK_TTL_MS = 120_000
WAIT_S = 120.0
log = logging.getLogger("farebox.stores.redis.migrate")

TenantOfKey = Callable[[str], Awaitable[str | None]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def ensure_layout(client: aioredis.Redis, layout: Layout, tenant_of_key: TenantOfKey) -> None:
    """Migrate the old layout's counters if there are any (see the module docstring)."""
    if _text(await client.get(layout.marker) or b"") == LAYOUT:
        return
    lock = f"{layout.home}:migrating"
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not await client.set(lock, "1", nx=True, px=LOCK_TTL_MS):
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigError(
                f"Redis: another replica has been migrating {layout.home} for {WAIT_S:.0f} s; "
                f"delete {lock} if it died, then start again"
            )
        await asyncio.sleep(0.5)  # polling for the other replica's migration, bounded above
        if _text(await client.get(layout.marker) or b"") == LAYOUT:
            return
    try:
        if _text(await client.get(layout.marker) or b"") != LAYOUT:
            await _migrate(client, layout, tenant_of_key)
            await client.set(layout.marker, LAYOUT)
    finally:
        await client.delete(lock)


async def _old_counters(client: aioredis.Redis, home: str) -> list[str]:
    names: set[str] = set()
    for kind in ("used", "reserved", "buckets"):
        start = f"{home}:{kind}:"
        async for key in client.scan_iter(match=f"{_glob(start)}*", count=1000):
            names.add(_text(key)[len(start) :])
    return sorted(names)


def _glob(text: str) -> str:
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in text)


async def _owner(counter: str, tenant_of_key: TenantOfKey) -> str | None:
    """The tenant a budget counter belongs to ("" for the global one); None: drop it."""
    scope, _, rest = counter.partition(":")
    if scope == "global":
        return ""
    if scope in ("tenant", "feature", "user"):
        return rest.partition(":")[0]
    if scope == "key":
        return await tenant_of_key(rest.partition(":")[0])
    return None  # rate limits and anything unknown


async def _migrate(client: aioredis.Redis, layout: Layout, tenant_of_key: TenantOfKey) -> None:
    home = layout.home
    held = await client.zcard(f"{home}:leases")
    if held:
        raise ConfigError(
            f"Redis: {home} holds {held} reservation(s) in the key layout of an older Farebox, "
            "so a replica of the older version is probably still serving. Stop every older "
            "replica, wait until their leases expire (budgets.lease_s), and start again: the "
            "budget counters are then moved to the new layout, not lost."
        )
    counters = await _old_counters(client, home)
    moved = 0
    for counter in counters:
        tenant = await _owner(counter, tenant_of_key)
        if tenant is not None:
            await _move(client, layout, layout.slot(tenant), counter)
            moved += 1
        old = [f"{home}:{kind}:{counter}" for kind in ("used", "reserved", "buckets")]
        for key in old:  # one at a time: on a cluster they need not share a slot
            await client.delete(key)
    async for key in client.scan_iter(match=f"{_glob(home)}:res:*", count=1000):
        await client.delete(key)  # settled or reclaimed records of the old layout
    log.warning("Redis: moved %d budget counters of %s to the tenant-sharded layout (%d old "
                "counters dropped: rate limits, deleted keys)", moved, home,
                len(counters) - moved)  # fmt: skip


async def _move(client: aioredis.Redis, layout: Layout, slot: str, counter: str) -> None:
    home = layout.home
    used = await client.hgetall(f"{home}:used:{counter}")
    buckets: list[Any] = await client.zrange(f"{home}:buckets:{counter}", 0, -1, withscores=True)
    fields = {f"u{_text(b)}": _text(v) for b, v in used.items() if _text(v) != "0"}
    if fields:
        await client.hset(layout.counter(slot, counter), mapping=fields)  # type: ignore[arg-type]
    if buckets:
        mapping = {_text(item[0]): float(item[1]) for item in buckets}
        await client.zadd(layout.buckets(slot, counter), mapping)
