"""Issue 7, item 5: two deployments (two databases) sharing one Redis database do not
interfere. Each keeps its keys under its own prefix (derived from its database unless
``redis_prefix`` is set): same-named tenants share no counters, a deployment never reclaims
the other's leases, and a second database is refused on a prefix another database owns.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from farebox.core.money import parse_usd
from tests.e2e import (
    ServerProcess,
    admin_headers,
    create_tenant_key,
    free_port,
    running,
    write_config,
)
from tests.outage import (
    REDIS,
    REDIS_DB,
    delete_keys,
    dsn,
    fresh_databases,
    ledger,
    meta,
    poll,
    redis_url,
    require_services,
    scaled_env,
)

LEASE_S = 2.0
HELD = 3  # slow requests each deployment's first replica holds when it is killed
PLANS = {"p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "1000"}]}}
PROVIDERS = {
    "fast": {"kind": "mock", "seed": 7, "latency_ms": 0},
    "slow": {"kind": "mock", "seed": 7, "latency_ms": 60_000},  # held until the kill
}
MODELS = {
    "gpt-4o-mini": [{"provider": "fast", "model": "gpt-4o-mini"}],
    "slow-mini": [{"provider": "slow", "model": "gpt-4o-mini"}],
}
CHAT = {"model": "gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def databases() -> Iterator[list[str]]:
    require_services()
    with fresh_databases(2) as names:
        yield names


def _config(directory: Path, database: str, **extra: Any) -> Path:
    directory.mkdir()
    return write_config(
        directory, providers=PROVIDERS, models=MODELS, plans=PLANS, database=dsn(database),
        redis=redis_url(), budgets={"lease_s": LEASE_S, "wait_for_room_s": 0}, **extra,
    )  # fmt: skip


def _args(config: Path, port: int) -> list[str]:
    return ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]


def _replicas(stack: ExitStack, config: Path, cwd: Path, env: dict[str, str], n: int) -> list[
        ServerProcess]:  # fmt: skip
    out = []
    for _ in range(n):
        port = free_port()
        out.append(stack.enter_context(running(_args(config, port), cwd=cwd, env=env, port=port)))
    return out


def _used(server: ServerProcess) -> int:
    r = httpx.get(f"{server.base_url}/admin/v1/tenants/t/budgets", headers=admin_headers())
    assert r.status_code == 200, r.text
    return parse_usd(r.json()["data"][0]["used_usd"])


def _leases(prefix: str) -> int:
    """Leases held by the deployment: tenant t's live in t's own slot (issue 18)."""
    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=REDIS_DB)
    try:
        return sum(int(client.zcard(f"{{{tag}}}:leases")) for tag in (prefix, f"{prefix}/t/t"))
    finally:
        client.close()


def _unsettled_users(database: str) -> set[str]:
    return {r["user"] for r in ledger(database) if r["status"] == "unsettled"}


def test_two_deployments_on_one_redis_share_no_counters_and_reclaim_only_their_own_leases(
    tmp_path: Path, databases: list[str]
) -> None:
    a_db, b_db = databases
    a_cfg, b_cfg = _config(tmp_path / "a", a_db), _config(tmp_path / "b", b_db)
    a_env, b_env = scaled_env(), scaled_env()
    with ExitStack() as stack, ThreadPoolExecutor(2 * HELD) as pool:
        a1, a2 = _replicas(stack, a_cfg, tmp_path, a_env, 2)
        b1, b2 = _replicas(stack, b_cfg, tmp_path, b_env, 2)
        prefixes = {meta(a_db, "redis_prefix"), meta(b_db, "redis_prefix")}
        assert len(prefixes) == 2 and None not in prefixes, prefixes
        a_prefix, b_prefix = meta(a_db, "redis_prefix") or "", meta(b_db, "redis_prefix") or ""
        keys = {"a": create_tenant_key(a1.base_url, "t", "p"),
                "b": create_tenant_key(b1.base_url, "t", "p")}  # fmt: skip

        # same-named tenant "t" in both: spending in A shows in A only
        auth = {"Authorization": f"Bearer {keys['a']}"}
        for _ in range(5):
            r = httpx.post(f"{a1.base_url}/v1/chat/completions", json=CHAT, headers=auth)
            assert r.status_code == 200, r.text
        assert _used(a2) > 0
        assert _used(b2) == 0

        # each first replica holds slow requests, then dies without settling them
        for name, server in (("a", a1), ("b", b1)):
            auth = {"Authorization": f"Bearer {keys[name]}"}
            for i in range(HELD):
                body = {**CHAT, "model": "slow-mini", "user": f"{name}-{i}"}
                pool.submit(httpx.post, f"{server.base_url}/v1/chat/completions", json=body,
                            headers=auth, timeout=120)  # fmt: skip
        for prefix in (a_prefix, b_prefix):
            poll(f"{HELD} leases held under {prefix}", lambda p=prefix: _leases(p) == HELD, 20)
        a1.kill()
        b1.kill()

        # each survivor reclaims its own deployment's leases, and only those
        poll("A's leases reclaimed", lambda: len(_unsettled_users(a_db)) == HELD, 30)
        poll("B's leases reclaimed", lambda: len(_unsettled_users(b_db)) == HELD, 30)
        assert _unsettled_users(a_db) == {f"a-{i}" for i in range(HELD)}
        assert _unsettled_users(b_db) == {f"b-{i}" for i in range(HELD)}
        assert _leases(a_prefix) == 0 and _leases(b_prefix) == 0


def test_a_second_database_on_a_prefix_another_database_owns_is_refused(
    tmp_path: Path, databases: list[str]
) -> None:
    first_db, second_db = databases
    prefix = f"hole5-{uuid.uuid4().hex[:8]}"
    env = scaled_env(secrets.token_hex(32))
    first = _config(tmp_path / "first", first_db, redis_prefix=prefix)
    second = _config(tmp_path / "second", second_db, redis_prefix=prefix)
    try:
        with ExitStack() as stack:
            [owner] = _replicas(stack, first, tmp_path, env, 1)
            port = free_port()
            refused = stack.enter_context(
                running(_args(second, port), cwd=tmp_path, env=env, port=port, wait=False)
            )
            assert refused.proc.wait(timeout=30) != 0
            line = refused.wait_for_line("Refusing to start").string
            assert prefix in line and first_db in line and second_db in line, line
            # the owner is unaffected, and a replica of the same database is welcome
            [again] = _replicas(stack, first, tmp_path, env, 1)
            assert httpx.get(f"{again.base_url}/readyz").status_code == 200
            assert httpx.get(f"{owner.base_url}/readyz").status_code == 200
    finally:
        delete_keys([prefix])


@pytest.mark.parametrize("bad", ["", "{fbx}", "a b", "x" * 65, "é"])
def test_a_redis_prefix_that_cannot_be_a_hash_tag_is_a_config_error(bad: str) -> None:
    from farebox.config.settings import parse_settings
    from farebox.errors import ConfigError

    with pytest.raises(ConfigError, match="redis_prefix"):
        parse_settings({"redis_prefix": bad}, source="t.yaml", env={}, base_dir=Path("."))
