"""Issue [12] acceptance 1, attacked across processes: two tenants (and namespaces of one
tenant, users and keys of others) send identical and near-identical prompts to the exact and
the semantic cache, and no answer ever crosses a partition:

(a) one process, the app driven in-process (ASGI transport);
(b) a real ``farebox serve --workers 2`` on SQLite (each worker's own in-process cache);
(c) two replicas (two ``farebox serve`` processes) on PostgreSQL + Redis, where a hit stored
    by replica A is found by replica B, and Redis holds no prompt or answer in plain text.

The upstream echoes each prompt with a serial of its own (``tests.cache_attack``), so every
miss's answer is unique and owned by its partition, and a hit is checked against who owns the
answer it carries. The checks themselves (``check_isolation``): a hit carries an answer a miss
of the same partition got, a partition's first request for a prompt misses, a hit costs 0 and
never reaches the upstream, and the ledger holds a ``cache_hit`` entry of cost 0 per hit.

(c) needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379: skipped when absent,
failed with FAREBOX_REQUIRE_SERVICES=1 (``tests.test_budget_replicas.backend``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cache_attack import (
    CACHE,
    HIT_EXACT,
    HIT_SEMANTIC,
    MISS,
    PAIRS,
    PLANS,
    Attack,
    EchoUpstream,
    Gateways,
    Part,
    Seen,
    check_isolation,
    echo_config,
    hits_per_tenant,
    purge_one_namespace,
    stored_settle,
)
from tests.e2e import (
    admin_headers,
    child_env,
    create_tenant_key,
    db_path,
    free_port,
    ledger_rows,
    running,
    serve_args,
    write_config,
)
from tests.tcp_proxy import LoopThread
from tests.test_budget_replicas import Backend, backend, stored_prefix  # noqa: F401  (a fixture)

UPSTREAM_ENV = {"ECHO_UPSTREAM_KEY": "sk-echo"}
NAMESPACES = (None, "n1", "n2")


def parts_for(keys: dict[str, str], tenants: tuple[str, str, str]) -> list[Part]:
    """The first tenant in three partitions (its own, ``n1``, ``n2``), the second in three
    too (``n1`` the same name as the first's), the third (asking last) in its own."""
    one, two, late = tenants
    parts = [Part(one, keys[one], ns) for ns in NAMESPACES]
    parts += [Part(two, keys[two], ns) for ns in NAMESPACES]
    return [*parts, Part(late, keys[late])]


def tenant_names(plan: str, suffix: str = "") -> tuple[str, str, str]:
    return (f"alpha-{plan}{suffix}", f"beta-{plan}{suffix}", f"gamma-{plan}{suffix}")


async def run_attack(attack: Attack, parts: list[Part], semantic: bool) -> None:
    await attack.sequential(parts, semantic)
    await attack.concurrent(parts)
    await attack.streams(parts)


def check_ledger_hits(rows: list[dict[str, Any]], hits: Counter[str]) -> None:
    """One ``cache_hit`` entry of cost 0 per hit the clients saw, per tenant."""
    found = Counter(r["tenant_id"] for r in rows if r["status"] == "cache_hit")
    assert found == hits, (found, hits)
    assert all(r["cost"] == 0 for r in rows if r["status"] == "cache_hit")


# --- (a) one process, in-process ------------------------------------------------------------


@dataclass
class InProcess:
    gw: Any  # tests.conftest.Gateway
    upstream: EchoUpstream

    async def admin(self, method: str, path: str) -> httpx.Response:
        return await self.gw.client.request(method, path, headers=self.gw.admin)

    async def keys(self, plan: str, tenants: tuple[str, ...]) -> dict[str, str]:
        return {t: await self.gw.tenant_key(t, plan) for t in tenants}

    async def ledger_rows(self) -> list[dict[str, Any]]:
        return [{"tenant_id": e.tenant_id, "status": e.status, "cost": e.cost}
                for e in await self.gw.ledger()]  # fmt: skip


@asynccontextmanager
async def in_process(make_gateway: Any) -> AsyncIterator[tuple[InProcess, Gateways, Attack]]:
    """A gateway in this process on the echo upstream, and a strict attack on it."""
    async with EchoUpstream() as upstream:
        config = {**echo_config(upstream.base_url), "plans": PLANS, "cache": CACHE}
        async with make_gateway(config, env=UPSTREAM_ENV) as gw:
            here = InProcess(gw, upstream)
            gateways = Gateways(gw.client, ["http://gateway"])
            yield (
                here,
                gateways,
                Attack(gateways, strict=True, settle=stored_settle(gateways, here.admin)),
            )


async def test_one_process_keeps_every_partition_apart(make_gateway: Any) -> None:
    async with in_process(make_gateway) as (here, gateways, attack):
        for plan in ("exact", "semantic"):
            names = tenant_names(plan)
            parts = parts_for(await here.keys(plan, names), names)
            await run_attack(attack, parts, semantic=plan == "semantic")
        await purge_one_namespace(attack, here.admin, parts_for_plan(gateways, "exact"))
        verdicts = check_isolation(gateways.seen, here.upstream.chat_calls())
        check_ledger_hits(await here.ledger_rows(), hits_per_tenant(gateways.seen))
    semantic_hits = sum(v[HIT_SEMANTIC] for v in verdicts.values())
    assert semantic_hits > 0, verdicts  # the near-identical wordings did reach the semantic path
    assert all(v[HIT_SEMANTIC] == 0 for p, v in verdicts.items() if "-exact" in str(p)), verdicts


def parts_for_plan(gateways: Gateways, plan: str) -> list[Part]:
    """The parts that asked under ``plan``'s tenants, in the order they first asked."""
    seen: dict[Part, None] = {}
    for s in gateways.seen:
        if f"-{plan}" in s.part.tenant:
            seen.setdefault(s.part)
    return list(seen)


async def test_users_and_keys_partition_one_tenant(make_gateway: Any) -> None:
    """``partition: user`` keeps one tenant's users apart, ``partition: key`` its keys."""
    async with in_process(make_gateway) as (here, gateways, attack):
        gw = here.gw
        user_key = await gw.tenant_key("users", "by-user")
        users = [Part("users", user_key, user=u, label=("users", u)) for u in ("u1", "u2")]
        await gw.tenant("keys", "by-key")
        keys = [await gw.key("keys") for _ in range(2)]
        by_key = [Part("keys", k, label=("keys", n)) for n, k in enumerate(keys)]
        for parts in (users, by_key):
            await attack.sequential(parts, semantic=False)
        await attack.concurrent([*users, *by_key])
        verdicts = check_isolation(gateways.seen, here.upstream.chat_calls())
        check_ledger_hits(await here.ledger_rows(), hits_per_tenant(gateways.seen))
    assert all(v[HIT_EXACT] > 0 for v in verdicts.values()), verdicts


# --- (b) farebox serve --workers 2 on SQLite ------------------------------------------------


@pytest.fixture
def echo() -> Iterator[EchoUpstream]:
    """The echo upstream on a loop of its own (the servers under test are other processes)."""
    loop = LoopThread()
    upstream = EchoUpstream()
    loop.run(upstream.start())
    try:
        yield upstream
    finally:
        loop.run(upstream.close())
        loop.close()


def provision(url: str, plan_tenants: dict[str, tuple[str, str, str]]) -> dict[str, list[Part]]:
    parts = {}
    for plan, names in plan_tenants.items():
        keys = {t: create_tenant_key(url, t, plan) for t in names}
        parts[plan] = parts_for(keys, names)
    return parts


def fresh_connections() -> httpx.AsyncClient:
    """No keep-alive: each request is a new connection, which the kernel hands to either
    worker of a ``--workers 2`` server."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
    return httpx.AsyncClient(limits=limits, timeout=60.0)


async def test_two_workers_keep_every_partition_apart(tmp_path: Path, echo: EchoUpstream) -> None:
    config = write_config(
        tmp_path, **echo_config(echo.base_url), plans=PLANS, cache={**CACHE, "backend": "auto"}
    )
    port = free_port()
    env = child_env(TMPDIR=str(tmp_path), **UPSTREAM_ENV)
    plan_tenants = {plan: tenant_names(plan) for plan in ("exact", "semantic")}
    with running(serve_args(config, port, "--workers", "2"), cwd=tmp_path, env=env,
                 port=port) as server:  # fmt: skip
        parts = provision(server.base_url, plan_tenants)
        async with fresh_connections() as client:
            gateways = Gateways(client, [server.base_url])
            attack = Attack(gateways, strict=False)  # each worker has a cache of its own
            for plan, plan_parts in parts.items():
                await run_attack(attack, plan_parts, semantic=plan == "semantic")
    verdicts = check_isolation(gateways.seen, echo.chat_calls())
    check_ledger_hits(ledger_rows(db_path(tmp_path)), hits_per_tenant(gateways.seen))
    exact_hits = hits_per_tenant([s for s in gateways.seen if "-exact" in s.part.tenant])
    assert all(exact_hits[t] > 0 for t in plan_tenants["exact"]), verdicts


# --- (c) two replicas on PostgreSQL + Redis -------------------------------------------------


async def pg_ledger(database: str) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT tenant_id, status, cost FROM ledger")
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def redis_plaintext(redis_url: str, prefix: str, secrets: set[str]) -> tuple[int, list[str]]:
    """How many cache keys this deployment has (``{<prefix>/c/...}``), and the keys of the
    deployment whose name or value holds any of ``secrets`` verbatim."""
    import redis

    client = redis.Redis.from_url(redis_url)
    found, cache_keys = [], 0
    try:
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            cache_keys += key.startswith(b"{" + prefix.encode() + b"/c/")
            blob = key + b"".join(_values(client, key))
            if any(s.encode() in blob for s in secrets):
                found.append(key.decode(errors="replace"))
    finally:
        client.close()
    return cache_keys, found


def drop_cache_keys(redis_url: str, prefix: str) -> None:
    """Remove this deployment's cache keys (``{<prefix>/c/<tenant>}:...``), which the
    ``backend`` fixture's clean-up patterns do not cover."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{{{prefix}/c/*", count=1000):
            client.delete(key)
    finally:
        client.close()


def _values(client: Any, key: bytes) -> list[bytes]:
    kind = client.type(key)
    if kind == b"string":
        return [client.get(key) or b""]
    if kind == b"hash":
        return [k + v for k, v in client.hgetall(key).items()]
    if kind == b"list":
        return list(client.lrange(key, 0, -1))
    if kind == b"set":
        return list(client.smembers(key))
    if kind == b"zset":
        return list(client.zrange(key, 0, -1))
    if kind == b"stream":
        return [repr(entry).encode() for entry in client.xrange(key)]
    return []


async def test_two_replicas_share_the_cache_and_keep_partitions_apart(
    tmp_path: Path,
    backend: Backend,  # noqa: F811
    echo: EchoUpstream,
) -> None:
    assert isinstance(backend.redis, str)  # one Redis (the cluster is the fleet tests')
    (tmp_path / "cfg").mkdir()
    config = write_config(
        tmp_path / "cfg", **echo_config(echo.base_url), plans=PLANS, cache=CACHE,
        database=backend.database, redis=backend.redis,
    )  # fmt: skip
    suffix = "-" + uuid.uuid4().hex[:6]
    plan_tenants = {plan: tenant_names(plan, suffix) for plan in ("exact", "semantic")}
    env = {**backend.env(), **UPSTREAM_ENV}
    with ExitStack() as stack:
        urls = [
            stack.enter_context(
                running(serve_args(config, port), cwd=tmp_path, env=env, port=port)
            ).base_url
            for port in (free_port(), free_port())
        ]
        parts = provision(urls[0], plan_tenants)
        prefix = await stored_prefix(backend.database)
        assert prefix, "the gateway chose no Redis prefix"
        stack.callback(drop_cache_keys, backend.redis, prefix)  # after the replicas stop
        async with httpx.AsyncClient(timeout=60.0) as client:

            async def admin(method: str, path: str) -> httpx.Response:
                return await client.request(method, urls[0] + path, headers=admin_headers())

            gateways = Gateways(client, urls)
            # strict: a repeat goes to the other replica and must hit what the first stored
            attack = Attack(gateways, strict=True, settle=stored_settle(gateways, admin))
            for plan, plan_parts in parts.items():
                await run_attack(attack, plan_parts, semantic=plan == "semantic")
            # a Redis dump holds no prompt and no answer in plain text
            secrets = {p for pair in PAIRS for p in pair} | set(echo.answers)
            cache_keys, readable = redis_plaintext(backend.redis, prefix, secrets)
            assert cache_keys > 0 and not readable, (cache_keys, readable)
            await purge_one_namespace(attack, admin, parts["exact"])
    verdicts = check_isolation(gateways.seen, echo.chat_calls())
    crossed = [s for s in gateways.seen if s.verdict == HIT_EXACT and s.server == 1]
    assert crossed, verdicts  # replica B served entries that replica A stored
    check_ledger_hits(await pg_ledger(backend.database), hits_per_tenant(gateways.seen))


# --- the oracle itself ------------------------------------------------------------------------


def seen(part: Part, prompt: str, verdict: str, content: str, cost: str = "0") -> Seen:
    return Seen(part, prompt, 200, verdict, content, cost, None, False, 0)


def test_the_check_catches_an_answer_that_crossed_a_partition() -> None:
    a, b = Part("a", "k1"), Part("b", "k2")
    a_ns = Part("a", "k1", namespace="n1")
    q = PAIRS[0][0]
    fine = [seen(a, q, MISS, f"<r:1> {q}", "0.01"), seen(a, q, HIT_EXACT, f"<r:1> {q}")]
    assert check_isolation(fine, upstream_calls=1)[a.partition][HIT_EXACT] == 1
    for thief in (b, a_ns):  # another tenant, and another namespace of the same tenant
        with pytest.raises(AssertionError, match="answer of"):
            check_isolation([*fine, seen(thief, q, HIT_EXACT, f"<r:1> {q}")], 1)
    with pytest.raises(AssertionError, match="upstream answered"):
        check_isolation([*fine, seen(b, q, MISS, f"<r:2> {q}", "0.01")], 1)  # b's miss uncounted
    other = PAIRS[1][0]
    with pytest.raises(AssertionError):  # an exact hit answering another prompt
        check_isolation([*fine, seen(a, other, HIT_EXACT, f"<r:1> {q}")], 1)
    with pytest.raises(AssertionError):  # a hit that cost something
        check_isolation([*fine, seen(a, q, HIT_EXACT, f"<r:1> {q}", "0.01")], 1)
