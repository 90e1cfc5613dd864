"""``redis:`` as a URL or as ``{url, cluster: true}``: what loads, what stops start-up (naming
the key), the environment's say; the cluster client the gateway builds from it (the same
bounds as the single client, queueing for a connection instead of failing); and which cluster
errors are a 503 ``limiter_unavailable`` (all of the "cannot serve this slot now" ones) and
which are left loud (keys of one call in several slots: a bug)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    MasterDownError,
    MovedError,
    RedisClusterException,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from farebox.config.settings import Settings, parse_settings
from farebox.errors import ConfigError, LimiterUnavailable
from farebox.stores.redis.cluster import BoundedCluster
from farebox.stores.scaled import _redis_required, redis_client
from farebox.stores.timeouts import StoreTimeouts
from tests.cluster_fixture import Cluster

PG = "postgresql://postgres@127.0.0.1:5432/x"
ENV = {"FAREBOX_SECRET": "s" * 64}


def load(redis: Any, env: dict[str, str] | None = None, database: str = PG) -> Settings:
    data: dict[str, Any] = {"database": database}
    if redis is not None:
        data["redis"] = redis
    return parse_settings(data, source="f.yaml", env={**ENV, **(env or {})}, base_dir=Path("."))


def refused(redis: Any, env: dict[str, str] | None = None, database: str = PG) -> str:
    with pytest.raises(ConfigError) as info:
        load(redis, env, database)
    return str(info.value)


# --- configuration ----------------------------------------------------------------------


def test_a_url_is_one_redis() -> None:
    s = load("redis://127.0.0.1:6379/2")
    assert (s.redis_url, s.redis_cluster) == ("redis://127.0.0.1:6379/2", False)
    assert s.file.redis is not None and s.file.redis.url == "redis://127.0.0.1:6379/2"


def test_the_mapping_names_a_cluster() -> None:
    s = load({"url": "redis://127.0.0.1:7000", "cluster": True})
    assert (s.redis_url, s.redis_cluster) == ("redis://127.0.0.1:7000", True)
    plain = load({"url": "redis://127.0.0.1:6379/0"})
    assert (plain.redis_url, plain.redis_cluster) == ("redis://127.0.0.1:6379/0", False)


@pytest.mark.parametrize(
    ("redis", "words"),
    [
        ({"url": "redis://h:7000", "clustr": True}, ["redis.clustr", "unknown"]),
        ({"url": "redis://h:7000", "cluster": "yes"}, ["redis.cluster", "boolean", "'yes'"]),
        ({"url": "redis://h:7000", "cluster": 1}, ["redis.cluster", "boolean"]),
        ({"cluster": True}, ["redis.url", "required"]),
        ({"url": 7000, "cluster": True}, ["redis.url", "string"]),
        (7000, ["redis", "redis:// URL", "cluster: true"]),
        ({"url": "http://h:7000", "cluster": True}, ["redis", "redis:// URL", "http://h:7000"]),
        (
            {"url": "unix:///run/redis.sock", "cluster": True},
            ["redis.cluster", "TCP", "unix socket"],
        ),
        ({"url": "redis://h:7000/3", "cluster": True}, ["redis.cluster", "database 0", "/3"]),
    ],
    ids=["unknown-key", "string-flag", "int-flag", "no-url", "url-not-text", "not-a-url",
         "wrong-scheme", "unix-socket", "database-3"],
)  # fmt: skip
def test_a_bad_redis_stops_start_up_naming_the_key(redis: Any, words: list[str]) -> None:
    message = refused(redis)
    assert message.startswith("f.yaml")
    for word in words:
        assert word in message, (word, message)


def test_the_environment_overrides_url_and_flag() -> None:
    cluster = {"url": "redis://127.0.0.1:7000", "cluster": True}
    moved = load(cluster, {"FAREBOX_REDIS": "redis://10.0.0.5:7001"})
    assert (moved.redis_url, moved.redis_cluster) == ("redis://10.0.0.5:7001", True)
    single = load(cluster, {"FAREBOX_REDIS_CLUSTER": "0"})
    assert single.redis_cluster is False
    on = load(None, {"FAREBOX_REDIS": "redis://127.0.0.1:7000", "FAREBOX_REDIS_CLUSTER": "true"})
    assert (on.redis_url, on.redis_cluster) == ("redis://127.0.0.1:7000", True)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FAREBOX_REDIS_CLUSTER": "maybe"}, ["FAREBOX_REDIS_CLUSTER", "'maybe'"]),
        (
            {"FAREBOX_REDIS": "unix:///s.sock", "FAREBOX_REDIS_CLUSTER": "1"},
            ["FAREBOX_REDIS_CLUSTER", "unix socket"],
        ),
    ],
    ids=["not-a-flag", "unix-socket"],
)
def test_a_bad_environment_stops_start_up_naming_the_variable(
    env: dict[str, str], words: list[str]
) -> None:
    message = refused("redis://127.0.0.1:6379/0", env)
    for word in words:
        assert word in message, (word, message)


def test_a_cluster_flag_without_redis_is_refused() -> None:
    message = refused(None, {"FAREBOX_REDIS_CLUSTER": "1"}, database="sqlite:///f.db")
    assert "FAREBOX_REDIS_CLUSTER" in message and "url" in message


# --- the client -------------------------------------------------------------------------


async def test_the_cluster_client_has_the_single_clients_bounds() -> None:
    t = StoreTimeouts(redis_connect_s=0.7, redis_command_s=1.3)
    client = redis_client("redis://127.0.0.1:7000", t, cluster=True)
    try:
        assert isinstance(client, BoundedCluster)
        kwargs = client.connection_kwargs
        assert kwargs["socket_timeout"] == 1.3 and kwargs["socket_connect_timeout"] == 0.7
        assert client.retry.get_retries() == 1
        assert TimeoutError not in client.ERRORS_ALLOW_RETRY  # a stall costs one timeout
        assert ConnectionError in client.ERRORS_ALLOW_RETRY
        assert client._wait_s == 1.3
    finally:
        await client.aclose()
    single = redis_client("redis://127.0.0.1:6379/0", t)
    assert not isinstance(single, BoundedCluster)
    await single.aclose()


async def test_commands_beyond_the_limit_queue_instead_of_failing(
    redis_cluster_nodes: Cluster,
) -> None:
    """Two places, sixty concurrent commands on one slot: all answered (a bare
    ``RedisCluster`` with two connections a node fails most with MaxConnectionsError)."""
    client = BoundedCluster.from_url(redis_cluster_nodes.url, limit=2, wait_s=10.0)
    try:
        key = "{queue-test}:n"
        await asyncio.gather(*(client.incr(key) for _ in range(60)))
        assert int(await client.get(key)) == 60
        assert all(len(node._connections) <= 2 for node in client.get_nodes())  # 2 places
        await client.delete(key)
    finally:
        await client.aclose()


async def test_a_command_that_waits_too_long_for_a_place_is_a_503(
    redis_cluster_nodes: Cluster,
) -> None:
    client = BoundedCluster.from_url(redis_cluster_nodes.url, limit=1, wait_s=0.2)
    try:
        await client.ping()
        await client._places.acquire()  # the one place is taken (as by a slow command)
        with pytest.raises(LimiterUnavailable), _redis_required():
            await client.get("{queue-test}:x")
        client._places.release()
        assert await client.get("{queue-test}:x") is None  # a free place: answered at once
    finally:
        await client.aclose()


# --- which errors are an unreachable Redis ------------------------------------------------

OUTAGES = [
    ClusterDownError("CLUSTERDOWN The cluster is down"),
    MasterDownError("MASTERDOWN Link with MASTER is down"),
    ClusterError("TTL exhausted."),
    TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    MovedError("3999 127.0.0.1:6381"),
    AskError("3999 127.0.0.1:6381"),
    SlotNotCoveredError('Slot "3999" is not covered by the cluster.'),
    RedisClusterUnreachableError("no node of the cluster answered"),
    RedisClusterException("Redis Cluster cannot be connected. Please provide at least one"),
    ConnectionError("Connection refused"),
    TimeoutError("Timeout reading from socket"),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
def test_a_cluster_that_cannot_answer_is_a_503(error: Exception) -> None:
    with pytest.raises(LimiterUnavailable) as info, _redis_required():
        raise error
    assert info.value.status == 503 and info.value.code == "limiter_unavailable"
    assert info.value.__cause__ is error


def test_keys_in_several_slots_are_a_bug_not_an_outage() -> None:
    error = RedisClusterException("EVALSHA - all keys must map to the same key slot")
    with pytest.raises(RedisClusterException), _redis_required():
        raise error


async def test_a_prefix_is_claimed_once_on_a_cluster(redis_cluster_nodes: Cluster) -> None:
    """``SET NX`` of ``{prefix}:owner`` (one key, one slot) works on a cluster as on one
    Redis: the owner may claim again, another database is refused naming both."""
    from farebox.stores.redis.namespace import claim

    client = redis_client(redis_cluster_nodes.url, StoreTimeouts(), cluster=True)
    prefix = f"claim-{uuid.uuid4().hex[:8]}"
    try:
        await claim(client, prefix, "db-one", "postgresql://h:5432/one")
        await claim(client, prefix, "db-one", "postgresql://h:5432/one")
        with pytest.raises(ConfigError) as info:
            await claim(client, prefix, "db-two", "postgresql://h:5432/two")
        assert "postgresql://h:5432/one" in str(info.value)
        assert "postgresql://h:5432/two" in str(info.value)
    finally:
        await client.delete("{" + prefix + "}:owner")
        await client.aclose()
