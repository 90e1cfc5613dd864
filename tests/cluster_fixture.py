"""A 3-node Redis Cluster for the whole test session, on free loopback ports.

``redis_cluster_url`` starts it (``bench.redis_cluster``: ``redis-server --cluster-enabled``
nodes of its own, never the shared Redis) the first time a test asks for it, and stops it at
the end of the session. Without ``redis-server`` the tests that need it skip, saying so,
unless ``FAREBOX_REQUIRE_SERVICES=1`` (as in CI): then they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from bench.redis_cluster import available, redis_cluster

NODES = 3


@dataclass(frozen=True)
class Cluster:
    ports: list[int]

    @property
    def url(self) -> str:
        """One node's URL: the client finds the others."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def config(self) -> dict[str, object]:
        """``redis:`` in ``farebox.yaml`` for this cluster."""
        return {"url": self.url, "cluster": True}


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[Cluster]:
    missing = available()
    if missing:
        message = f"cannot start a Redis Cluster ({missing}): the cluster variants are untested"
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with redis_cluster(NODES) as ports:
        yield Cluster(ports)
