"""Issue [10]: token counts take from a requests-per-minute limit exactly, across replicas
sharing Redis (PostgreSQL for the ledger), on one Redis and on a 3-node Redis Cluster.

A burst of counts over two ``farebox serve`` replicas is admitted up to the tenant's limit and
not one more; the limit is then used up for chat requests too, and the ledger holds nothing
for the tenant: no count, and no refusal. (Needs PostgreSQL and Redis on 127.0.0.1, see
``tests.test_budget_replicas.backend``.)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.e2e import create_tenant_key, free_port, running
from tests.test_budget_leases import serve_args
from tests.test_budget_replicas import (  # noqa: F401
    Backend,
    backend,
    pytest_generate_tests,  # on one Redis and on a Redis Cluster
)
from tests.test_rate_limit_replicas import CHAT, replica_config, tenant_id

LIMIT = 10
COUNTS = 30


async def counts(urls: list[str], key: str) -> Counter[int]:
    """``COUNTS`` input-token counts at once, round-robin over ``urls``: their statuses."""
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": "gpt-4o-mini", "input": "How many tokens is this?"}
    async with httpx.AsyncClient(timeout=30.0) as client:

        async def one(i: int) -> int:
            url = f"{urls[i % len(urls)]}/v1/responses/input_tokens"
            return (await client.post(url, json=body, headers=auth)).status_code

        return Counter(await asyncio.gather(*(one(i) for i in range(COUNTS))))


def test_counts_use_the_limit_exactly_across_replicas(
    tmp_path: Path,
    backend: Backend,  # noqa: F811
) -> None:
    config = replica_config(tmp_path / "cfg", backend, {"requests_per_minute": LIMIT})
    ports = [free_port() for _ in range(2)]
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                running(serve_args(config, port), cwd=tmp_path, env=backend.env(), port=port)
            )
            for port in ports
        ]
        tenant = tenant_id()
        key = create_tenant_key(servers[0].base_url, tenant, "p")
        statuses = asyncio.run(counts([s.base_url for s in servers], key))
        assert statuses == {200: LIMIT, 429: COUNTS - LIMIT}
        for server in servers:
            r = httpx.post(f"{server.base_url}/v1/chat/completions", json=CHAT,
                           headers={"Authorization": f"Bearer {key}"}, timeout=30.0)  # fmt: skip
            assert r.status_code == 429, r.text
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert backend.ledger(tenant) == []
