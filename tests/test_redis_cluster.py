"""Issue 9, acceptance 3: on a 3-node Redis Cluster on loopback, two replicas of ``farebox
serve`` share PostgreSQL and the cluster (``redis: {url: ..., cluster: true}``). The requests
of 100 tenants spread over all three nodes (each node's keys are read before and after), and
under 500-way concurrency every tenant's rate limit and budget hold, and so does the global
budget (the one counter all tenants share): never overspent.

And a cluster that loses a node answers 503 ``limiter_unavailable``, never a 500.

Needs PostgreSQL on 127.0.0.1:5432 and ``redis-server`` (the cluster is the test's own, on
free loopback ports; the shared Redis is never used): skipped loudly without them, failed
with FAREBOX_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.redis_cluster import redis_cluster

from farebox.core.money import parse_usd
from tests.cluster_fixture import Cluster
from tests.e2e import create_tenant_key, free_port, running, write_config
from tests.outage import dsn, fresh_databases, ledger, poll, require_services, scaled_env
from tests.test_budget_leases import serve_args

TENANTS = 100  # the first burst: half on plan "rate", half on plan "budget"
OPEN_TENANTS = 50  # the second burst: plan "open", no limit of their own
BURST = 500  # requests at once, alternating over the two replicas
RATE_LIMIT = 2  # requests per minute, for the tenants on plan "rate"
TENANT_LIMIT = "0.006"  # USD a day, for the tenants on plan "budget"
# USD a day, all tenants together. The first burst cannot reach it: at most 2 holds of about
# USD 0.004 for each "rate" tenant and 0.006 for each "budget" tenant, 0.71 in all. The second
# burst (500 requests of about 0.002 each, holding 0.004 each while in flight) goes past it.
GLOBAL_LIMIT = "1.00"
MOCK = {
    "kind": "mock",
    "seed": 7,
    "latency_ms": 5,  # requests overlap
    "output_tokens": {"distribution": "uniform", "min": 20, "max": 400},
}
CHAT = {"model": "gpt-4o", "max_tokens": 400, "messages": [{"role": "user", "content": "a story"}]}
PLANS = {
    "open": {"models": ["*"]},
    "rate": {"models": ["*"], "rate_limits": [{"scope": "tenant", "requests_per_minute": 2}]},
    "budget": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": TENANT_LIMIT}]},
}
BUDGETS = {
    "wait_for_room_s": 0,  # a request that does not fit is refused now, not queued
    "global": [{"scope": "global", "period": "day", "limit_usd": GLOBAL_LIMIT}],
}

Answer = tuple[str, int, dict[str, Any]]  # tenant, status, body


def node_keys(ports: list[int]) -> dict[int, set[bytes]]:
    """Every key each node holds (a node's SCAN sees its own slots only)."""
    import redis

    keys = {}
    for port in ports:
        node = redis.Redis(host="127.0.0.1", port=port)
        try:
            keys[port] = set(node.scan_iter(count=1000))
        finally:
            node.close()
    return keys


def delete_keys(keys: dict[int, set[bytes]]) -> None:
    import redis

    for port, names in keys.items():
        node = redis.Redis(host="127.0.0.1", port=port)
        try:
            for name in names:
                node.delete(name)
        finally:
            node.close()


async def fire(urls: list[str], keys: dict[str, str]) -> list[Answer]:
    """BURST requests at once, the tenants in turn, alternating over the replicas."""
    tenants = list(keys)
    jobs = [tenants[n % len(tenants)] for n in range(BURST)]
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def one(n: int, tenant: str) -> Answer:
            auth = {"Authorization": f"Bearer {keys[tenant]}"}
            r = await client.post(f"{urls[n % len(urls)]}/v1/chat/completions", json=CHAT,
                                  headers=auth)  # fmt: skip
            return tenant, r.status_code, r.json()

        return list(await asyncio.gather(*(one(n, t) for n, t in enumerate(jobs))))


def refusals(answers: list[Answer], plans: dict[str, str]) -> Counter[tuple[str, str]]:
    """(plan, what refused) for every refusal: ``rate``, or the budget's scope. Every answer
    is a 200 or a contract 429."""
    out: Counter[tuple[str, str]] = Counter()
    for tenant, status, body in answers:
        assert status in (200, 429), (status, body)
        if status == 429:
            error = body["error"]
            assert error["code"] in ("budget_exceeded", "rate_limit_exceeded"), body
            scope = error["budget"]["scope"] if error["code"] == "budget_exceeded" else "rate"
            out[(plans[tenant], scope)] += 1
    return out


def check_limits(answers: list[Answer], rows: list[dict[str, Any]], plans: dict[str, str]) -> None:
    """Every tenant's rate limit and budget held, and the global budget: the ledger has one
    row per admitted request, and no sum in it passes its limit."""
    admitted = Counter(tenant for tenant, status, _ in answers if status == 200)
    spent: dict[str, int] = defaultdict(int)
    for row in rows:
        assert row["status"] == "ok", row
        spent[row["tenant_id"]] += row["cost"]
    assert len(rows) == sum(admitted.values()), "every admitted request is in the ledger once"
    for tenant, plan in plans.items():
        if plan == "rate":
            assert admitted[tenant] <= RATE_LIMIT, (tenant, admitted[tenant])
        elif plan == "budget":
            assert spent[tenant] <= parse_usd(TENANT_LIMIT), (tenant, spent[tenant])
    total = sum(spent.values())
    assert total <= parse_usd(GLOBAL_LIMIT), f"global budget overspent: {total} pico-USD"
    print(f"spent {total} of {parse_usd(GLOBAL_LIMIT)} pico-USD")


def check_spread(before: dict[int, set[bytes]], after: dict[int, set[bytes]]) -> None:
    new = {port: after[port] - before[port] for port in after}
    counts = {port: len(keys) for port, keys in new.items()}
    assert all(counts.values()), f"new keys per node (a node got none): {counts}"
    total = sum(counts.values())
    # 100 tenants hashed over three nodes: none gets less than a tenth of the keys
    assert min(counts.values()) * 10 >= total, f"new keys per node, far from even: {counts}"
    print(f"new keys per node: {counts}")


def test_a_hundred_tenants_spread_over_the_cluster_and_every_limit_holds(
    tmp_path: Path, redis_cluster_nodes: Cluster
) -> None:
    require_services()
    with fresh_databases(1) as [name], ExitStack() as stack:
        config = write_config(tmp_path, providers={"sim": MOCK}, plans=PLANS, database=dsn(name),
                              redis=redis_cluster_nodes.config, budgets=BUDGETS)  # fmt: skip
        env = scaled_env()
        servers = [
            stack.enter_context(running(serve_args(config, p), cwd=tmp_path, env=env, port=p))
            for p in (free_port(), free_port())
        ]
        urls = [s.base_url for s in servers]
        before = node_keys(redis_cluster_nodes.ports)
        plans = {f"t{i:03d}": ("rate", "budget")[i % 2] for i in range(TENANTS)}
        plans |= {f"open{i:02d}": "open" for i in range(OPEN_TENANTS)}
        keys = {
            t: create_tenant_key(urls[i % 2], t, plan) for i, (t, plan) in enumerate(plans.items())
        }
        first = asyncio.run(fire(urls, {t: k for t, k in keys.items() if plans[t] != "open"}))
        second = asyncio.run(fire(urls, {t: k for t, k in keys.items() if plans[t] == "open"}))
        after = node_keys(redis_cluster_nodes.ports)
        try:
            check_limits(first + second, ledger(name), plans)
            check_spread(before, after)
        finally:
            delete_keys({port: after[port] - before[port] for port in after})
    # each limit was reached, so each "held" above means something
    early, late = refusals(first, plans), refusals(second, plans)
    print(f"refusals: first burst {dict(early)}, second burst {dict(late)}")
    assert early[("rate", "rate")] > 0 and early[("budget", "tenant")] > 0, early
    assert early[("rate", "global")] == early[("budget", "global")] == 0, early
    assert late[("open", "global")] > 0, late


def _shutdown(port: int) -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "SHUTDOWN", "NOSAVE"],
                   capture_output=True, timeout=10, check=False)  # fmt: skip


def test_a_cluster_that_loses_a_node_is_a_503_never_a_500(tmp_path: Path) -> None:
    """A cluster of the test's own: one node is shut down while requests of a dozen tenants
    keep coming. Tenants on the live nodes may still be served until the cluster declares
    itself down; every other answer is a 503 ``limiter_unavailable``, and then all are."""
    require_services()
    from bench.redis_cluster import available

    if available():
        pytest.skip(f"cannot start a Redis Cluster: {available()}")
    timeouts = {"redis_command_s": 1.0, "redis_connect_s": 0.5}
    with fresh_databases(1) as [name], redis_cluster(3) as cluster_ports:
        redis = {"url": f"redis://127.0.0.1:{cluster_ports[0]}", "cluster": True}
        config = write_config(tmp_path, providers={"sim": MOCK}, plans=PLANS, database=dsn(name),
                              redis=redis, timeouts=timeouts)  # fmt: skip
        port = free_port()
        with running(serve_args(config, port), cwd=tmp_path, env=scaled_env(), port=port) as s:
            keys = [create_tenant_key(s.base_url, f"o{i}", "open") for i in range(12)]
            with httpx.Client(base_url=s.base_url, timeout=30.0) as client:

                def round_of_requests() -> list[tuple[int, str | None]]:
                    out = []
                    for key in keys:
                        r = client.post("/v1/chat/completions", json=CHAT,
                                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
                        code = None if r.status_code == 200 else r.json()["error"]["code"]
                        assert (r.status_code, code) in ((200, None), (503, "limiter_unavailable"))
                        out.append((r.status_code, code))
                    return out

                assert all(status == 200 for status, _ in round_of_requests())
                assert client.get("/readyz").status_code == 200
                _shutdown(cluster_ports[1])
                # the cluster declares itself down once its nodes agree (node timeout 5 s)
                poll("every request refused", lambda: all(
                    status == 503 for status, _ in round_of_requests()), timeout=30.0)  # fmt: skip
                assert client.get("/readyz").status_code == 503
