"""Acceptance 1 and 2 on the scaled-out backend: three (or two) replicas of ``farebox serve``
sharing PostgreSQL (tenants, keys, ledger) and Redis (budget counters, leases, auth epoch).

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379; skips loudly when either is
absent, and fails instead when FAREBOX_REQUIRE_SERVICES=1 (as in CI). Every test that takes
``backend`` runs twice here: on that Redis, and on the session's 3-node Redis Cluster
(``tests.cluster_fixture``; ``redis: {url: ..., cluster: true}``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from farebox.core.money import parse_usd
from tests.e2e import (
    admin_headers,
    child_env,
    create_tenant_key,
    free_port,
    running,
    running_replicas,
    spread_chats,
    write_config,
)
from tests.test_budget_concurrency import (
    MOCK,
    PLANS,
    check_answers,
    check_budget,
    check_spend,
    request_bodies,
)
from tests.test_budget_leases import CHAT, HELD, LEASE_S, TOO_LITTLE, budget, poll, serve_args

PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


REDIS_KINDS = ("redis", "redis-cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run this module's tests that take ``backend`` on one Redis and on a Redis Cluster."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", REDIS_KINDS, indirect=True)


@dataclass
class Backend:
    database: str
    redis: str | dict[str, Any]  # ``redis:`` in farebox.yaml: a URL, or a cluster's mapping
    secret: str

    def env(self) -> dict[str, str]:
        return child_env(FAREBOX_SECRET=self.secret)

    async def _rows(self, tenant: str) -> list[dict[str, Any]]:
        import asyncpg

        conn = await asyncpg.connect(self.database)
        try:
            rows = await conn.fetch(
                "SELECT request_id, status, cost, reservation_id FROM ledger WHERE tenant_id = $1",
                tenant,
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    def ledger(self, tenant: str) -> list[dict[str, Any]]:
        return asyncio.run(self._rows(tenant))


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """PostgreSQL (a database of its own) and Redis: the shared one, or the session's Redis
    Cluster when the test is parametrised with ``redis-cluster``."""
    if getattr(request, "param", "redis") == "redis-cluster":
        yield from _cluster_backend(request.getfixturevalue("redis_cluster_nodes"))
        return
    missing = [f"{name} at {h}:{p}" for name, (h, p) in (("PostgreSQL", PG), ("Redis", REDIS))
               if not _reachable((h, p))]  # fmt: skip
    if missing:
        message = f"{' and '.join(missing)} not running: the scaled-out backend is untested"
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    import asyncpg
    import redis

    name = f"farebox_{uuid.uuid4().hex[:12]}"
    admin_dsn = f"postgresql://postgres@{PG[0]}:{PG[1]}/postgres"

    async def database(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(database(f'CREATE DATABASE "{name}"'))
    db_index = 7
    dsn = f"postgresql://postgres@{PG[0]}:{PG[1]}/{name}"
    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=db_index)
    try:  # a new database gets a Redis prefix of its own: no flush of the shared Redis needed
        yield Backend(
            database=dsn, redis=f"redis://{REDIS[0]}:{REDIS[1]}/{db_index}",
            secret=secrets.token_hex(32),
        )  # fmt: skip
    finally:
        prefix = asyncio.run(stored_prefix(dsn))
        if prefix is not None:  # remove this test's keys only: other runs may share the db
            for pattern in (f"{{{prefix}}}:*", f"{{{prefix}/t/*"):  # and tenant slots' (issue 18)
                for key in client.scan_iter(match=pattern, count=1000):
                    client.delete(key)
        client.close()
        asyncio.run(database(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _cluster_backend(cluster: Any) -> Iterator[Backend]:
    """PostgreSQL as above, Redis the cluster; this test's keys are removed afterwards."""
    if not _reachable(PG):
        message = f"PostgreSQL at {PG[0]}:{PG[1]} not running: the scaled-out backend is untested"
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    import redis

    name = f"farebox_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    dsn = f"postgresql://postgres@{PG[0]}:{PG[1]}/{name}"
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        yield Backend(database=dsn, redis=cluster.config, secret=secrets.token_hex(32))
    finally:
        prefix = asyncio.run(stored_prefix(dsn))
        if prefix is not None:
            for pattern in (f"{{{prefix}}}:*", f"{{{prefix}/t/*"):  # and tenant slots'
                for key in client.scan_iter(match=pattern, count=1000):
                    client.delete(key)
        client.close()
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin_sql(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@{PG[0]}:{PG[1]}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def stored_prefix(dsn: str) -> str | None:
    """The Redis prefix the gateway chose for this database (``None`` if it never started)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.meta') IS NOT NULL")
        if not exists:
            return None
        value = await conn.fetchval("SELECT value FROM public.meta WHERE name = 'redis_prefix'")
    finally:
        await conn.close()
    return None if value is None else str(value)


def replica_config(directory: Path, backend: Backend, mock: dict[str, Any], **extra: Any) -> Path:
    directory.mkdir()
    return write_config(
        directory, providers={"sim": mock}, plans=PLANS, database=backend.database,
        redis=backend.redis, **extra,
    )  # fmt: skip


def test_500_concurrent_requests_across_three_replicas(tmp_path: Path, backend: Backend) -> None:
    config = replica_config(tmp_path / "cfg", backend, MOCK)
    with running_replicas(config, cwd=tmp_path, env=backend.env()) as servers:
        key = create_tenant_key(servers[0].base_url, "t", "p")
        bodies = request_bodies(3)
        since = time.time()
        answers = asyncio.run(spread_chats([s.base_url for s in servers], key, bodies))
        ok = check_answers(answers, bodies)
        rows = backend.ledger("t")
        assert len(rows) == ok and {r["status"] for r in rows} == {"ok"}
        spent = sum(int(r["cost"]) for r in rows)
        with httpx.Client(headers=admin_headers(), timeout=10.0) as admin:
            for server in servers:  # every replica sees the same, settled counters
                r = admin.get(f"{server.base_url}/admin/v1/tenants/t/budgets")
                assert r.status_code == 200, r.text
                check_budget(r.json(), spent, since)
    check_spend(spent)


def test_a_killed_replicas_holds_are_reclaimed(tmp_path: Path, backend: Backend) -> None:
    plans = {"p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.01"}]}}
    lease = {"lease_s": LEASE_S, "wait_for_room_s": 0}

    def config(name: str, latency: int) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        mock = {"kind": "mock", "seed": 7, "latency_ms": latency}
        return write_config(
            directory,
            providers={"sim": mock},
            plans=plans,
            database=backend.database,
            redis=backend.redis,
            budgets=lease,
        )

    port_a, port_b = free_port(), free_port()
    env = backend.env()
    with (
        running(serve_args(config("b", 0), port_b), cwd=tmp_path, env=env, port=port_b) as b,
        running(serve_args(config("a", 30_000), port_a), cwd=tmp_path, env=env, port=port_a) as a,
        httpx.Client(headers=admin_headers(), timeout=10.0) as admin,
        ThreadPoolExecutor(max_workers=HELD) as pool,
    ):
        key = create_tenant_key(b.base_url, "t", "p")
        auth = {"Authorization": f"Bearer {key}"}

        def held_request() -> Exception | httpx.Response:
            try:
                url = f"{a.base_url}/v1/chat/completions"
                return httpx.post(url, json=CHAT, headers=auth, timeout=60.0)
            except httpx.TransportError as exc:
                return exc

        pending = [pool.submit(held_request) for _ in range(HELD)]
        held = poll(
            "A's requests hold the budget",
            lambda: parse_usd((s := budget(admin, b))["remaining_usd"]) < TOO_LITTLE and s,
            timeout=10.0,
        )
        assert parse_usd(held["reserved_usd"]) > 0 and held["used_usd"] == "0.00"
        blocked = httpx.post(f"{b.base_url}/v1/chat/completions", json=CHAT, headers=auth)
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "budget_exceeded"
        a.kill()
        killed = time.monotonic()
        for future in pending:
            assert isinstance(future.result(timeout=10), httpx.TransportError)
        released = poll(
            "B reclaims A's holds",
            lambda: (s := budget(admin, b))["reserved_usd"] == "0.00" and s,
            timeout=4 * LEASE_S,
        )
        assert time.monotonic() - killed <= 4 * LEASE_S
        assert released["used_usd"] == "0.00"
        # the release (Redis) and the unsettled entries (PostgreSQL) are two writes in a row
        unsettled = poll(
            "the unsettled entries are written",
            lambda: (
                len(
                    (
                        r := admin.get(f"{b.base_url}/admin/v1/unsettled", params={"tenant": "t"})
                    ).json()["data"]
                )
                == HELD
                and r.json()
            ),
            timeout=2 * LEASE_S,
        )
        assert len(unsettled["data"]) == HELD
        assert time.monotonic() - killed <= 4 * LEASE_S
        statuses = [r["status"] for r in backend.ledger("t")]
        assert statuses.count("unsettled") == HELD
        again = httpx.post(f"{b.base_url}/v1/chat/completions", json=CHAT, headers=auth)
        assert again.status_code == 200, again.text


def test_revocation_reaches_every_replica_at_once(tmp_path: Path, backend: Backend) -> None:
    config = replica_config(tmp_path / "cfg", backend, MOCK)
    ports = [free_port(), free_port()]
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                running(serve_args(config, port), cwd=tmp_path, env=backend.env(), port=port)
            )
            for port in ports
        ]
        with httpx.Client(headers=admin_headers(), timeout=10.0) as admin:
            base = servers[0].base_url
            assert admin.post(f"{base}/admin/v1/tenants", json={"id": "t", "plan": "p"}).is_success
            made = admin.post(f"{base}/admin/v1/tenants/t/keys", json={"name": "k"}).json()
            auth = {"Authorization": f"Bearer {made['key']}"}
            for server in servers:  # both replicas authenticate (and cache) the key
                url = f"{server.base_url}/v1/chat/completions"
                assert httpx.post(url, json=chat, headers=auth).status_code == 200
            revoked = admin.delete(f"{servers[1].base_url}/admin/v1/keys/{made['id']}")
            assert revoked.status_code == 200
            for server in servers:
                url = f"{server.base_url}/v1/chat/completions"
                assert httpx.post(url, json=chat, headers=auth).status_code == 401
