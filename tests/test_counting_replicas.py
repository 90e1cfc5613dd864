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
from pathlib import Path

import httpx

from tests.test_budget_replicas import (  # noqa: F401
    Backend,
    backend,
    pytest_generate_tests,  # on one Redis and on a Redis Cluster
)
from tests.test_rate_limit_replicas import CHAT, replicas

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
    with replicas(tmp_path, backend, {"requests_per_minute": LIMIT}, 2) as (urls, tenant, key):
        statuses = asyncio.run(counts(urls, key))
        assert statuses == {200: LIMIT, 429: COUNTS - LIMIT}
        for url in urls:
            r = httpx.post(f"{url}/v1/chat/completions", json=CHAT,
                           headers={"Authorization": f"Bearer {key}"}, timeout=30.0)  # fmt: skip
            assert r.status_code == 429, r.text
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert backend.ledger(tenant) == []
