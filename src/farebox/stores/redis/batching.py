"""Settle batches on a Redis Cluster: one script per node, not one per slot.

Redis charges every script call a fixed price (reading and parsing the call, finding the
script, setting up its run, the reply), whatever the script then does. A settle batch
(``stores.settler``) holds entries of many tenants, so of many slots, and a cluster spreads
its 16,384 slots over a few nodes: one script per slot paid that price for almost every entry.
So ``RedisBudgets.settle`` groups the batch's slots by the node that serves them in the
client's slot map (``NodeScripts.by_node``) and sends each node one ``hot.SETTLE_NODE`` for
all of its slots (``target_nodes``; it declares no keys, as the keys a script declares must
share one slot). A node with a single slot of the batch gets the per-slot script
(``hot.SETTLE`` with declared keys, which redis-py routes and redirects itself).

A stale slot map (a resharding moved a slot, a failover moved a node): the node script fails
at the first entry of a slot its node does not serve ("non local key", a ``MOVED``/``ASK``/
``TRYAGAIN``), or cannot reach its node. The entries before that one are settled, it and the
ones after are not. ``AGAIN_PER_SLOT`` then settles that node's share of the batch again,
one script per slot, as before node batching: redis-py follows the redirects and refreshes
its map. Nothing is lost and nothing counted twice: settling is idempotent per reservation
and slot (a settled reservation's record is deleted, or marked ``settled_late``), so the
entries the node script settled change nothing the second time. A counter that would leave
the 64-bit range fails the node script too: per slot, the other slots' entries settle and the
overflow is raised, as before. A timeout is not tried again (as everywhere in the store: a
stalled node costs one timeout), nor a call that found no free connection
(``cluster.NoPlace``): the settler leaves those entries to lease reclaim.

Not covered, here as before node batching: a slot caught in the middle of a migration (some
of its keys moved, some not) can fail a script between two counters of one entry, since the
settle scripts declare no counter keys.

Redis before 7 cannot read the script's flag (``#!lua flags=allow-cross-slot-keys``) and
refuses it; ``NodeScripts`` then runs ``hot.SETTLE`` itself on the nodes, whose scripts
without a shebang may touch keys of several slots of their node (so may Redis 7's).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterError, NoScriptError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from farebox.errors import FareboxError
from farebox.stores.redis import hot
from farebox.stores.redis.cluster import NoPlace

SLOTS_MAX = 100_000  # hash tags whose cluster slot is remembered, at most

# what makes a node's batch be settled again one script per slot (see the module docstring)
AGAIN_PER_SLOT: tuple[type[BaseException], ...] = (
    ResponseError,  # a slot the node does not serve; MOVED, ASK, TRYAGAIN, CLUSTERDOWN
    ClusterError,  # redirected too often
    RedisClusterException,  # the client's map has no node for a slot
    RedisConnectionError,  # the node is gone (a failover)
    FareboxError,  # an overflow: the other slots' entries settle
)
NOT_AGAIN: tuple[type[BaseException], ...] = (NoPlace,)

Script = Callable[..., Awaitable[Any]]


class NodeScripts:
    """``hot.SETTLE_NODE`` on the nodes of one cluster client (``script``: for the tests)."""

    def __init__(self, client: RedisCluster, script: str = hot.SETTLE_NODE) -> None:
        self._client = client
        self._slots: dict[str, int] = {}  # hash tag -> cluster slot
        self.use(script)

    def use(self, script: str) -> None:
        self.script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 (Redis's name)

    def slot(self, tag: str) -> int:
        """The cluster slot of the keys of a hash tag (``{...}``, braces included)."""
        found = self._slots.get(tag)
        if found is None:
            if len(self._slots) >= SLOTS_MAX:
                self._slots.clear()
            found = self._slots[tag] = key_slot(tag.encode())
        return found

    def by_node(self, tags: Iterable[str]) -> list[tuple[ClusterNode | None, list[str]]]:
        """The hash tags by the node that serves their slot in the client's map; a tag whose
        slot the map does not cover (or a map not loaded yet) alone, with no node."""
        nodes: dict[str, tuple[ClusterNode | None, list[str]]] = {}
        alone: list[tuple[ClusterNode | None, list[str]]] = []
        manager = self._client.nodes_manager
        for tag in tags:
            try:
                node = manager.get_node_from_slot(self.slot(tag))
            except RedisClusterException:
                alone.append((None, [tag]))
                continue
            nodes.setdefault(node.name, (node, []))[1].append(tag)
        return [*nodes.values(), *alone]

    def on(self, node: ClusterNode) -> Script:
        """The node's settle script, called as a registered script is (``keys``, ``args``)."""
        return functools.partial(self._call, node)

    async def _call(self, node: ClusterNode, keys: list[str], args: list[str]) -> Any:
        try:
            return await self._evalsha(node, keys, args)
        except NoScriptError:  # a node that restarted, or never ran it
            await self._load(node)
            return await self._evalsha(node, keys, args)

    async def _load(self, node: ClusterNode) -> None:
        try:
            await self._client.execute_command("SCRIPT LOAD", self.script, target_nodes=node)
        except ResponseError:
            if self.script == hot.SETTLE:
                raise
            # a server that cannot read the flag (before Redis 7): a script without a shebang
            # may touch every slot of its node too (Redis's compatibility mode for EVAL)
            self.use(hot.SETTLE)
            await self._client.execute_command("SCRIPT LOAD", self.script, target_nodes=node)

    async def _evalsha(self, node: ClusterNode, keys: list[str], args: list[str]) -> Any:
        return await self._client.execute_command(
            "EVALSHA", self._sha, len(keys), *keys, *args, target_nodes=node
        )
