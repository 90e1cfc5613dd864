"""Acceptance: a rate limit of 60 requests per minute admits no more than 60 in any
60-second window under concurrent load, across three replicas sharing Redis (PostgreSQL for
the ledger) and across ``farebox serve --workers 4`` sharing one SQLite database.

The burst tests show the limit is exact (all of it usable, none of it exceeded). The
sustained-load tests use a 3-second window so that the window slides several times while
the test runs, and check every window of admitted requests in the ledger.

The replica tests need PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (see
``tests.test_budget_replicas.backend``: skipped when absent, failed with
FAREBOX_REQUIRE_SERVICES=1); they run on that Redis and on a 3-node Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.e2e import (
    child_env,
    create_tenant_key,
    db_path,
    free_port,
    ledger_rows,
    running,
    running_replicas,
    write_config,
)
from tests.test_budget_leases import serve_args
from tests.test_budget_replicas import (  # noqa: F401
    Backend,
    backend,
    pytest_generate_tests,  # the replica tests run on one Redis and on a Redis Cluster
)

MOCK = {"kind": "mock", "seed": 7, "latency_ms": 5}  # a little latency, so requests overlap
CHAT = {
    "model": "gpt-4o-mini",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "count to three"}],
}

BURST_LIMIT = 60
BURST_REQUESTS = 240

WINDOW_S = 3
WINDOW_LIMIT = 20
BUCKET_S = 1  # max(WINDOW_S // 60, 1): a window of 3 s is counted over 4 buckets of 1 s
LOOPS = 16
LOAD_S = 10.0


def plans(limit: dict[str, Any]) -> dict[str, Any]:
    return {"p": {"models": ["*"], "rate_limits": [{"scope": "tenant", **limit}]}}


def tenant_id() -> str:
    # Redis db 7 is shared with other runs of the replica tests: keep our counters apart
    return f"rl-{uuid.uuid4().hex[:10]}"


# --- the two backends -----------------------------------------------------------------


def replica_config(directory: Path, services: Backend, limit: dict[str, Any]) -> Path:
    directory.mkdir()
    return write_config(
        directory,
        providers={"sim": MOCK},
        plans=plans(limit),
        database=services.database,
        redis=services.redis,
    )


@contextlib.contextmanager
def replicas(
    tmp_path: Path, services: Backend, limit: dict[str, Any], count: int
) -> Iterator[tuple[list[str], str, str]]:
    """``count`` replicas of ``farebox serve`` sharing ``services``, under a plan with the
    rate ``limit``: their base URLs, a fresh tenant and its key."""
    config = replica_config(tmp_path / "cfg", services, limit)
    with running_replicas(config, cwd=tmp_path, env=services.env(), count=count) as servers:
        urls = [server.base_url for server in servers]
        tenant = tenant_id()
        yield urls, tenant, create_tenant_key(urls[0], tenant, "p")


async def _pg_started(services: Backend, tenant: str) -> list[float]:
    import asyncpg

    conn = await asyncpg.connect(services.database)
    try:
        rows = await conn.fetch("SELECT started_at FROM ledger WHERE tenant_id = $1", tenant)
    finally:
        await conn.close()
    return [float(r["started_at"]) for r in rows]


def pg_started(services: Backend, tenant: str) -> list[float]:
    return asyncio.run(_pg_started(services, tenant))


def sqlite_started(directory: Path, tenant: str) -> list[float]:
    rows = ledger_rows(db_path(directory), "tenant_id = ?", (tenant,))
    return [float(r["started_at"]) for r in rows]


# --- load -----------------------------------------------------------------------------

Answer = tuple[int, dict[str, Any], httpx.Headers]


def client_limits() -> httpx.Limits:
    return httpx.Limits(max_connections=BURST_REQUESTS, max_keepalive_connections=BURST_REQUESTS)


async def burst(urls: Sequence[str], key: str) -> list[Answer]:
    """BURST_REQUESTS chat requests at once, round-robin over ``urls``."""
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(limits=client_limits(), timeout=60.0) as client:

        async def one(i: int) -> Answer:
            url = f"{urls[i % len(urls)]}/v1/chat/completions"
            r = await client.post(url, json=CHAT, headers=auth)
            return r.status_code, r.json(), r.headers

        return list(await asyncio.gather(*(one(i) for i in range(BURST_REQUESTS))))


async def sustained(urls: Sequence[str], key: str) -> tuple[list[Answer], float, float]:
    """LOOPS client loops sending back to back for LOAD_S seconds; after a 429 a loop waits
    what the server asked for in ``retry-after-ms``. Returns the answers and the wall-clock
    start and end of the load."""
    auth = {"Authorization": f"Bearer {key}"}
    answers: list[Answer] = []
    async with httpx.AsyncClient(limits=client_limits(), timeout=30.0) as client:
        start = time.time()
        deadline = time.monotonic() + LOAD_S

        async def loop(n: int) -> None:
            i = n
            while time.monotonic() < deadline:
                url = f"{urls[i % len(urls)]}/v1/chat/completions"
                i += 1
                r = await client.post(url, json=CHAT, headers=auth)
                answers.append((r.status_code, r.json(), r.headers))
                if r.status_code == 429:
                    wait = int(r.headers["retry-after-ms"]) / 1000
                    # honour the server's Retry-After, but not past the end of the load
                    await asyncio.sleep(min(wait, max(deadline - time.monotonic(), 0.0)))

        await asyncio.gather(*(loop(n) for n in range(LOOPS)))
        end = time.time()
    return answers, start, end


# --- checks ---------------------------------------------------------------------------


def check_refusal(body: dict[str, Any], headers: httpx.Headers, limit: int) -> None:
    error = body["error"]
    assert error["code"] == "rate_limit_exceeded", body
    assert error["type"] == "rate_limit_error", body
    assert headers["x-ratelimit-limit-requests"] == str(limit)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert int(headers["retry-after-ms"]) >= 1


def check_burst(answers: list[Answer], started: list[float]) -> None:
    ok = [(body, headers) for status, body, headers in answers if status == 200]
    refused = [(body, headers) for status, body, headers in answers if status == 429]
    statuses = sorted({status for status, _, _ in answers})
    assert len(ok) + len(refused) == BURST_REQUESTS, f"unexpected statuses: {statuses}"
    assert len(ok) == BURST_LIMIT, f"{len(ok)} admitted, the limit is {BURST_LIMIT}"
    assert len(refused) == BURST_REQUESTS - BURST_LIMIT
    remaining = []
    for body, headers in ok:
        assert body["object"] == "chat.completion", body
        assert headers["x-ratelimit-limit-requests"] == str(BURST_LIMIT)
        assert headers["x-ratelimit-reset-requests"]
        remaining.append(int(headers["x-ratelimit-remaining-requests"]))
    # every admission saw its own count: 59, 58, ..., 0 once each
    assert sorted(remaining) == list(range(BURST_LIMIT)), sorted(remaining)
    for body, headers in refused:
        check_refusal(body, headers, BURST_LIMIT)
        # the oldest admitted request leaves the 60 s window (counted over 21 buckets of
        # 3 s) at most 63 s from now
        assert 1 <= int(headers["retry-after"]) <= 63, headers["retry-after"]
        assert body["error"]["limit"] == {
            "scope": "tenant",
            "unit": "requests",
            "model": None,
            "limit": BURST_LIMIT,
        }
    assert len(started) == BURST_LIMIT, f"{len(started)} ledger rows for {BURST_LIMIT} admitted"


def check_sliding(answers: list[Answer], started: list[float], start: float, end: float) -> None:
    ok = sum(1 for status, _, _ in answers if status == 200)
    refused = [(body, headers) for status, body, headers in answers if status == 429]
    statuses = sorted({status for status, _, _ in answers})
    assert ok + len(refused) == len(answers), f"unexpected statuses: {statuses}"
    assert refused, "the load never reached the limit"
    for body, headers in refused:
        check_refusal(body, headers, WINDOW_LIMIT)
    assert len(started) == ok, f"{len(started)} ledger rows for {ok} admitted requests"
    # the servers run on this host and share its wall clock with the test
    assert all(start <= t <= end for t in started), (start, end, min(started), max(started))
    # No epsilon: every process reads the same system clock, and started_at is stored as a
    # double, so the timestamps are compared exactly as the gateway took them.
    times = sorted(started)
    for i, t in enumerate(times):
        inside = [u for u in times[i:] if u < t + WINDOW_S]
        assert len(inside) <= WINDOW_LIMIT, (
            f"{len(inside)} admitted in [{t:.3f}, {t + WINDOW_S:.3f}): "
            + ", ".join(f"{u:.3f}" for u in inside)
        )
    # the limit is usable: a request stays counted for WINDOW_S + BUCKET_S seconds at most
    duration = end - start
    floor = WINDOW_LIMIT * math.floor(duration / (WINDOW_S + BUCKET_S))
    assert ok >= floor, f"only {ok} admitted in {duration:.1f} s, expected at least {floor}"


# --- tests ----------------------------------------------------------------------------


def test_sixty_per_minute_across_three_replicas(
    tmp_path: Path,
    backend: Backend,  # noqa: F811
) -> None:
    with replicas(tmp_path, backend, {"requests_per_minute": BURST_LIMIT}, 3) as (
        urls,
        tenant,
        key,
    ):
        answers = asyncio.run(burst(urls, key))
        check_burst(answers, pg_started(backend, tenant))


def test_sixty_per_minute_across_four_sqlite_workers(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, providers={"sim": MOCK}, plans=plans({"requests_per_minute": BURST_LIMIT})
    )
    port = free_port()
    args = [*serve_args(config, port), "--workers", "4"]
    with running(args, cwd=tmp_path, env=child_env(), port=port) as server:
        tenant = tenant_id()
        key = create_tenant_key(server.base_url, tenant, "p")
        answers = asyncio.run(burst([server.base_url], key))
        check_burst(answers, sqlite_started(tmp_path, tenant))


SLIDING = {"requests_per_minute": WINDOW_LIMIT, "window_s": WINDOW_S}


def test_sliding_window_under_sustained_load_replicas(
    tmp_path: Path,
    backend: Backend,  # noqa: F811
) -> None:
    with replicas(tmp_path, backend, SLIDING, 3) as (urls, tenant, key):
        answers, start, end = asyncio.run(sustained(urls, key))
        check_sliding(answers, pg_started(backend, tenant), start, end)


def test_sliding_window_under_sustained_load_workers(tmp_path: Path) -> None:
    config = write_config(tmp_path, providers={"sim": MOCK}, plans=plans(SLIDING))
    port = free_port()
    args = [*serve_args(config, port), "--workers", "4"]
    with running(args, cwd=tmp_path, env=child_env(), port=port) as server:
        tenant = tenant_id()
        key = create_tenant_key(server.base_url, tenant, "p")
        answers, start, end = asyncio.run(sustained([server.base_url], key))
        check_sliding(answers, sqlite_started(tmp_path, tenant), start, end)
