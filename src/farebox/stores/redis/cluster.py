"""The Redis Cluster client of the scaled-out store, and which cluster errors mean "Redis
cannot answer now" (a 503 ``limiter_unavailable``) rather than a bug.

redis-py's asyncio ``RedisCluster`` keeps a pool per node, but a node whose connections are
all busy fails the command at once with ``MaxConnectionsError``: under a burst of concurrent
requests for one tenant (one slot, one node) that would refuse requests a single Redis only
queues. ``BoundedCluster`` queues them the same way: at most ``limit`` commands are in flight
per client, each node may open ``limit`` connections plus a few spare ones (for a pub/sub
subscriber, which holds one outside the commands), so no node runs out, and a command waits
at most ``wait_s`` for a place, then fails as a connection error would. Its retry policy is the
single client's: a connection error (and a ``CLUSTERDOWN`` or an uncovered slot, which ask
for a topology refresh) is retried as the ``retry`` object says; a timeout is not, so a
stalled node costs one command timeout, not several.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    CrossSlotTransactionError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from farebox.stores.timeouts import StoreTimeouts

SPARE_CONNECTIONS = 4
REDIS_CONNECTIONS = 64  # commands in flight per client, at most


class NoPlace(RedisConnectionError):
    """No place for a command within ``wait_s``: it was never sent (a connection error, as
    the single client's pool raises when it has none to give)."""


# What a cluster raises when it cannot serve a slot now: CLUSTERDOWN / MASTERDOWN and
# "TTL exhausted" after too many redirects (``ClusterError``), TRYAGAIN during a resharding,
# a MOVED / ASK that outlived the redirects, and the client's own topology failures
# (``RedisClusterException``: no node reachable, slots not covered, nodes that disagree).
CLUSTER_DOWN: tuple[type[BaseException], ...] = (
    ClusterError,
    TryAgainError,
    AskError,
    RedisClusterException,
)


def is_key_layout_bug(exc: BaseException) -> bool:
    """A command whose keys span several slots: a bug in the key layout, not an outage, so
    it is left to fail loudly instead of looking like an unreachable Redis."""
    if isinstance(exc, CrossSlotTransactionError):
        return True
    return type(exc) is RedisClusterException and "same key slot" in str(exc)


class BoundedCluster(RedisCluster):
    """``RedisCluster`` whose commands queue (at most ``wait_s``) for one of ``limit``
    places instead of failing when a node's connections are all in use."""

    # a timeout is not retried (as on the single client); see the module docstring. The
    # base class's own tuple names TimeoutError too, hence its narrower declared type.
    ERRORS_ALLOW_RETRY = (  # type: ignore[assignment]
        RedisConnectionError,
        ClusterDownError,
        SlotNotCoveredError,
    )

    def __init__(self, *, limit: int, wait_s: float, **kwargs: Any) -> None:
        # a node's connections: one per place, and a few taken outside the commands (a
        # pub/sub subscriber borrows one from its node)
        super().__init__(max_connections=limit + SPARE_CONNECTIONS, **kwargs)
        self._places = asyncio.Semaphore(limit)
        self._wait_s = wait_s

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._places.locked():
            try:
                async with asyncio.timeout(self._wait_s):
                    await self._places.acquire()
            except TimeoutError:
                raise NoPlace(f"no free Redis Cluster connection within {self._wait_s} s") from None
        else:
            await self._places.acquire()
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._places.release()


async def answers(client: Any) -> bool:
    """Whether Redis can serve requests now. One Redis: it answers ``PING``. A cluster: every
    primary answers ``PING`` and the cluster says it serves every slot (a live node still
    answers ``PING`` while the cluster is down and refuses every key)."""
    if not isinstance(client, RedisCluster):
        return bool(await client.ping())
    if not await client.ping(target_nodes=RedisCluster.PRIMARIES):
        return False
    info = await client.cluster_info()
    return _text(info.get("cluster_state")) == "ok"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_client(
    url: str,
    timeouts: StoreTimeouts,
    connections: int = REDIS_CONNECTIONS,
    *,
    cluster: bool = False,
) -> aioredis.Redis:
    """A pooled client whose every command is bounded: connecting, sending and reading take
    at most their timeouts, waiting for a free connection at most the command timeout. A
    dropped connection is retried once at once (a stale pooled connection after a restart);
    a timeout is not retried, so a stall costs one timeout, not several.

    ``cluster``: a Redis Cluster client (``url`` names any one node; the others are found)
    with the same bounds and retries, ``REDIS_CONNECTIONS`` commands in flight at most. It
    has the single client's command API; it is typed as one for the stores that use it."""
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    if cluster:
        client = BoundedCluster.from_url(
            url,
            limit=connections,
            wait_s=timeouts.redis_command_s,  # commands beyond the limit wait, this long at most
            socket_timeout=timeouts.redis_command_s,
            socket_connect_timeout=timeouts.redis_connect_s,
            retry=retry,
            # a slot without a node fails only the tenants whose keys it holds (a 503)
            require_full_coverage=False,
        )
        return cast(aioredis.Redis, client)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=timeouts.redis_command_s,  # requests beyond the pool wait, this long at most
        socket_timeout=timeouts.redis_command_s,
        socket_connect_timeout=timeouts.redis_connect_s,
        retry=retry,
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool
