"""Batch abuse scaled out (issue 15): with PostgreSQL plus Redis, every process and replica
counts an end user's near-identical requests in Redis (``stores.redis.bursts``, one script
call per request), so a burst split across them is seen whole.

- Two watches on one scaled store (two processes' worth): a burst alternating between them
  is caught at ``batch_max + 1``, where each alone saw half; per user, per window; the key
  expires with the window; varied texts are no burst.
- The script's similarity is the in-process one (hypothesis: the second text joins the
  first's cluster exactly when ``similarity`` says they are near-identical).
- Redis not answering: the request is counted in process.
- Two ``farebox serve`` replicas on PostgreSQL and Redis: a burst sent alternately to each is
  blocked from request ``batch_max + 1`` on (per process it would pass until ``2 * batch_max``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.guardrails import AbusePolicy
from farebox.guardrails import abuse
from farebox.guardrails.abuse import BatchWatch, shared_sketch, similarity
from farebox.stores.redis.bursts import RedisBursts
from farebox.stores.redis.layout import Layout
from tests.contracts.backends import opened
from tests.e2e import admin_headers, running_replicas, write_config
from tests.test_abuse_patterns import prose
from tests.test_budget_replicas import (  # noqa: F401
    Backend,
    backend,
    pytest_generate_tests,  # the replica test runs on one Redis and on a Redis Cluster
)

POLICY = AbusePolicy(batch="block", batch_max=5, batch_window_s=60)
TEMPLATE = ("Write a product description for item number {n} in our spring catalogue, "
            "friendly tone, two paragraphs, mention free shipping and easy returns.")  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def scaled(tmp_path: Path) -> AsyncIterator[Any]:
    async with opened("postgres+redis", tmp_path) as store:
        yield store


async def test_a_burst_split_over_two_processes_is_seen_whole(scaled: Any) -> None:
    clock = Clock()
    shared = [BatchWatch(clock, shared=scaled.bursts) for _ in range(2)]
    alone = [BatchWatch(clock) for _ in range(2)]  # the per-process count, for contrast
    hits, local = [], []
    for n in range(8):
        clock.now += 1
        text = TEMPLATE.format(n=n * 7919)
        hits.append(await shared[n % 2].check("acme", "u1", text, POLICY))
        local.append(await alone[n % 2].check("acme", "u1", text, POLICY))
    assert [h is not None for h in hits] == [False] * 5 + [True] * 3  # batch_max 5
    assert hits[-1] is not None and hits[-1].category == "batch_abuse"
    assert all(h is None for h in local)  # each process saw four: no burst
    assert all(w.shared for w in shared) and len(shared[0]) == 0  # nothing kept in process


async def test_shared_bursts_are_per_user_per_window_and_expire(scaled: Any) -> None:
    clock = Clock()
    a, b = BatchWatch(clock, shared=scaled.bursts), BatchWatch(clock, shared=scaled.bursts)
    text = "translate the attached paragraph into german and keep the formatting"
    for watch in itertools.islice(itertools.cycle([a, b]), 5):
        assert await watch.check("acme", "u1", text, POLICY) is None
        assert await watch.check("acme", "u2", text, POLICY) is None  # another user
        assert await watch.check("other", "u1", text, POLICY) is None  # another tenant's
    assert await a.check("acme", "u1", text, POLICY) is not None  # the sixth in a minute
    keys = [k async for k in scaled._client.scan_iter(match=f"{scaled.key_prefix[:-1]}/t/*")]
    assert len(keys) == 4  # two per tenant (its users' clusters, when each was last seen)
    for key in keys:
        assert 0 < await scaled._client.ttl(key) <= POLICY.batch_window_s + 1
    fields = {k: await scaled._client.hlen(k) for k in keys if k.endswith(b":bursts")}
    assert sorted(fields.values()) == [1, 2]  # other: u1; acme: u1 and u2
    clock.now += 61  # the window has passed
    assert await b.check("acme", "u1", text, POLICY) is None
    for seed in range(12):  # ever new texts from one user: no burst
        assert await a.check("acme", "u3", prose(seed, 400), POLICY) is None


_WORDS = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"]),
                  min_size=0, max_size=60)  # fmt: skip


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(a=_WORDS, edits=st.lists(st.tuples(st.integers(0, 59), st.sampled_from(["x", "y", ""])),
                                max_size=12))  # fmt: skip
async def test_the_scripts_similarity_is_the_watchs(
    scaled: Any, a: list[str], edits: list[tuple[int, str]]
) -> None:
    b = list(a)
    for at, word in edits:  # a few words changed or dropped: similar, or not quite
        if at < len(b):
            b[at] = word
    first, second = " ".join(a), " ".join(w for w in b if w)
    near = similarity(frozenset(shared_sketch(first)), frozenset(shared_sketch(second)))
    rule = abuse.BurstRule(60, 10, abuse.SIMILAR, abuse.CLUSTERS, abuse.SKETCH)
    user = uuid.uuid4().hex  # a fresh end user per example
    bursts = scaled.bursts
    assert await bursts.count("hyp", user, shared_sketch(first), 1.0, rule) == 1
    joined = await bursts.count("hyp", user, shared_sketch(second), 2.0, rule)
    assert joined == (2 if near >= abuse.SIMILAR else 1), near


async def test_redis_not_answering_counts_in_process() -> None:
    import redis.asyncio as aioredis

    from tests.e2e import free_port

    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    try:
        clock = Clock()
        watch = BatchWatch(clock, shared=RedisBursts(client, lambda: Layout("nowhere")))
        hits = [await watch.check("acme", "u1", TEMPLATE.format(n=n), POLICY) for n in range(6)]
        assert [h is not None for h in hits] == [False] * 5 + [True]
        assert len(watch) == 1  # counted here
    finally:
        await client.aclose()


# two replicas ---------------------------------------------------------------------------------
def settings_for(backend: Backend) -> dict[str, Any]:  # noqa: F811
    abuse_cfg = {"batch": "block", "batch_max": 5, "batch_window_s": 600}
    return {
        "database": backend.database,
        "redis": backend.redis,
        "providers": {"sim": {"kind": "mock", "seed": 7, "latency_ms": 0}},
        "plans": {"free": {"models": ["*"], "guardrails": {"abuse": abuse_cfg}}},
        "default_plan": "free",
    }


@contextlib.contextmanager
def replicas(tmp_path: Path, backend: Backend) -> Iterator[list[str]]:  # noqa: F811
    directory = tmp_path / "cfg"
    directory.mkdir()
    config = write_config(directory, **settings_for(backend))
    with running_replicas(config, cwd=tmp_path, env=backend.env(), count=2) as servers:
        yield [s.base_url for s in servers]


def test_a_burst_split_over_two_replicas_is_blocked(tmp_path: Path, backend: Backend) -> None:  # noqa: F811
    async def scenario(urls: list[str]) -> list[tuple[int, str]]:
        async with httpx.AsyncClient(timeout=20.0) as c:
            r = await c.post(f"{urls[0]}/admin/v1/tenants", json={"id": "acme", "plan": "free"},
                             headers=admin_headers())  # fmt: skip
            assert r.status_code == 201, r.text
            r = await c.post(f"{urls[0]}/admin/v1/tenants/acme/keys", json={"name": "k"},
                             headers=admin_headers())  # fmt: skip
            assert r.status_code == 201, r.text
            auth = {"Authorization": f"Bearer {r.json()['key']}"}
            out = []
            for n in range(10):  # one after the other, alternating replicas
                body = {
                    "model": "gpt-4o-mini",
                    "max_tokens": 8,
                    "user": "end-user-1",
                    "messages": [{"role": "user", "content": TEMPLATE.format(n=n * 31)}],
                }
                r = await c.post(f"{urls[n % 2]}/v1/chat/completions", json=body, headers=auth)
                out.append((r.status_code, r.json().get("error", {}).get("code", "")))
            return out

    with replicas(tmp_path, backend) as urls:
        answers = asyncio.run(scenario(urls))
    assert [s for s, _ in answers] == [200] * 5 + [400] * 5, answers
    assert {code for s, code in answers if s == 400} == {"abuse_detected"}
