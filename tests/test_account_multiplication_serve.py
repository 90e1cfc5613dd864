"""Account multiplication (issue 15, acceptance 4) on real servers: one IP with keys of six
free-plan tenants, spread over ``farebox serve --workers 2`` (one SQLite database) and over two
replicas sharing PostgreSQL and Redis (one Redis, and a Redis Cluster):

- the plan's rate limit of scope ip ``across_tenants`` (10 a minute) admits exactly 10 of a
  burst of 60 requests sent at once with the six tenants' keys, whichever process serves
  them; another IP has its own count;
- ONE incident of kind ``account_multiplication`` opens, however many processes run the
  check, and PagerDuty (a loopback fake) is paged once.

The client IP is set the way a load balancer does: the servers trust 127.0.0.1 as a proxy and
each request carries ``X-Forwarded-For``. The check runs every half second in every process;
the test polls the admin API for the incident, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from fakes.paging import PagerDutyFake, pagerduty_errors
from tests.e2e import (
    admin_headers,
    child_env,
    free_port,
    running,
    running_replicas,
    serve_args,
    write_config,
)
from tests.test_budget_replicas import (  # noqa: F401
    Backend,
    backend,
    pytest_generate_tests,  # the replica tests run on one Redis and on a Redis Cluster
)

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
ATTACKER = "203.0.113.7"
LIMIT = 10
BURST = 60
TENANTS = 6
CHAT = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
DEADLINE_S = 30.0


def settings(pd_url: str) -> dict[str, Any]:
    across = {"scope": "ip", "requests_per_minute": LIMIT, "across_tenants": True}
    return {
        "providers": {"sim": {"kind": "mock", "seed": 7, "latency_ms": 5}},
        "plans": {"free": {"models": ["*"], "rate_limits": [across]}, "pro": {"models": ["*"]}},
        "server": {"trusted_proxies": ["127.0.0.1/32"]},
        "anomaly": {
            "flush_interval_s": 0.2,
            "check_interval_s": 0.5,
            "retry_backoff_s": 0.05,
            "pagerduty": {"routing_key": "env:PD_KEY", "base_url": pd_url},
            # alert: nothing paused, so the burst meets the rate limit only
            "account_multiplication": {"action": "alert"},
        },
    }


def make_tenants(base_url: str) -> list[str]:
    keys = []
    with httpx.Client(base_url=base_url, headers=admin_headers(), timeout=10.0) as c:
        for i in range(TENANTS):
            tid = f"free-{i}"
            assert c.post("/admin/v1/tenants", json={"id": tid, "plan": "free"}).status_code == 201
            r = c.post(f"/admin/v1/tenants/{tid}/keys", json={"name": "k"})
            assert r.status_code == 201, r.text
            keys.append(str(r.json()["key"]))
    return keys


async def burst(urls: list[str], keys: list[str]) -> list[tuple[int, Any]]:
    """BURST chats at once from ATTACKER, round-robin over the keys and the servers, each on a
    connection of its own (so every worker gets some)."""
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def one(i: int) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {keys[i % len(keys)]}",
                       "X-Forwarded-For": ATTACKER}  # fmt: skip
            r = await client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=CHAT,
                                  headers=headers)  # fmt: skip
            return r.status_code, r.json()

        return list(await asyncio.gather(*(one(i) for i in range(BURST))))


async def incidents(base_url: str) -> list[dict[str, Any]]:
    """The anomaly incidents, once there is one (polled until DEADLINE_S)."""
    deadline = time.monotonic() + DEADLINE_S
    async with httpx.AsyncClient(base_url=base_url, headers=admin_headers()) as c:
        while True:
            found: list[dict[str, Any]] = (await c.get("/admin/v1/anomalies")).json()["data"]
            if found or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)


async def scenario(start: Callable[[str], contextlib.AbstractContextManager[list[str]]]) -> None:
    """``start(pd_url)``: the servers, as a context manager giving their base URLs."""
    async with PagerDutyFake(ROUTING_KEY) as pd:
        stack = contextlib.ExitStack()
        urls = await asyncio.to_thread(stack.enter_context, start(pd.root_url))
        try:
            keys = await asyncio.to_thread(make_tenants, urls[0])
            answers = await burst(urls, keys)
            ok = [body for status, body in answers if status == 200]
            refused = [body["error"] for status, body in answers if status == 429]
            assert len(ok) == LIMIT, [s for s, _ in answers]
            assert len(refused) == BURST - LIMIT
            assert {(e["code"], e["limit"]["scope"]) for e in refused} == {
                ("rate_limit_exceeded", "ip")
            }
            async with httpx.AsyncClient(timeout=10.0) as c:  # another IP: its own count
                r = await c.post(
                    f"{urls[-1]}/v1/chat/completions",
                    json=CHAT,
                    headers={
                        "Authorization": f"Bearer {keys[0]}",
                        "X-Forwarded-For": "198.51.100.4",
                    },
                )
                assert r.status_code == 200, r.text
            found = await incidents(urls[-1])
        finally:
            await asyncio.to_thread(stack.close)  # the alerts drain while the fake answers
    assert len(found) == 1, found
    incident = found[0]
    assert incident["metric"] == "account_multiplication"
    assert incident["client"] == ATTACKER
    assert incident["tenants"] == [f"free-{i}" for i in range(TENANTS)]
    assert len(pd.events) == 1, pd.events  # paged once, in every round until the servers stopped
    assert pagerduty_errors(pd.events[0], ROUTING_KEY) == []
    assert pd.events[0]["dedup_key"] == f"farebox/account_multiplication/{ATTACKER}"


def test_across_workers(tmp_path: Path) -> None:
    @contextlib.contextmanager
    def start(pd_url: str) -> Iterator[list[str]]:
        config = write_config(tmp_path, **settings(pd_url))
        port = free_port()
        env = child_env(PD_KEY=ROUTING_KEY)
        args = [*serve_args(config, port), "--workers", "2"]
        with running(args, cwd=tmp_path, env=env, port=port) as server:
            yield [server.base_url]

    asyncio.run(scenario(start))


def test_across_two_replicas(tmp_path: Path, backend: Backend) -> None:  # noqa: F811
    @contextlib.contextmanager
    def start(pd_url: str) -> Iterator[list[str]]:
        directory = tmp_path / "cfg"
        directory.mkdir()
        config = write_config(directory, database=backend.database, redis=backend.redis,
                              **settings(pd_url))  # fmt: skip
        env = {**backend.env(), "PD_KEY": ROUTING_KEY}
        with running_replicas(config, cwd=tmp_path, env=env, count=2) as servers:
            yield [s.base_url for s in servers]

    asyncio.run(scenario(start))
