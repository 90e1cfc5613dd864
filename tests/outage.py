"""Helpers for the outage tests (issue 7, items 2, 3 and 5): fresh PostgreSQL databases on
the shared server, one spare Redis database, and reading a deployment's ledger.

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379; skips loudly when either is
absent, and fails instead when FAREBOX_REQUIRE_SERVICES=1 (as in CI). The shared servers are
never cut, flushed or reconfigured: outages are made with ``tests.tcp_proxy`` in front of
them, and each test deletes only the keys of the prefixes its deployments used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
import pytest

PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
REDIS_DB = 12  # a spare database of the shared Redis; keys are deleted by prefix afterwards
ADMIN_DSN = f"postgresql://postgres@{PG[0]}:{PG[1]}/postgres"
POLL_S = 0.05
T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a loop of its own (usable from sync and async tests)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def require_services() -> None:
    missing = []
    for name, address in (("PostgreSQL", PG), ("Redis", REDIS)):
        try:
            with socket.create_connection(address, timeout=1.0):
                pass
        except OSError:
            missing.append(f"{name} at {address[0]}:{address[1]}")
    if missing:
        message = f"{' and '.join(missing)} not running: the outage tests cannot run"
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def dsn(name: str, address: tuple[str, int] = PG) -> str:
    return f"postgresql://postgres@{address[0]}:{address[1]}/{name}"


def redis_url(address: tuple[str, int] = REDIS) -> str:
    return f"redis://{address[0]}:{address[1]}/{REDIS_DB}"


@contextlib.contextmanager
def fresh_databases(count: int) -> Iterator[list[str]]:
    """``count`` new, empty databases (their names); dropped afterwards with the Redis keys
    of the prefixes their deployments chose."""
    names = [f"farebox_outage_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    for name in names:
        _run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield names
    finally:
        prefixes = [p for p in (meta(n, "redis_prefix") for n in names) if p]
        delete_keys(prefixes)
        for name in names:
            _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def delete_keys(prefixes: list[str]) -> None:
    import redis

    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=REDIS_DB)
    try:
        for prefix in prefixes:  # the home slot's keys and every tenant slot's (issue 18)
            for pattern in (f"{{{prefix}}}*", f"{{{prefix}/t/*"):
                for key in list(client.scan_iter(match=pattern, count=1000)):
                    client.delete(key)
    finally:
        client.close()


async def _fetch(name: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(dsn(name))
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.meta') IS NOT NULL")
        if not exists:
            return []
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def meta(name: str, key: str) -> str | None:
    rows = _run(_fetch(name, "SELECT value FROM meta WHERE name = $1", key))
    return str(rows[0]["value"]) if rows else None


def ledger(name: str) -> list[dict[str, Any]]:
    """Every ledger row of the database ``name`` (cost as an exact int)."""
    rows = _run(_fetch(name, "SELECT * FROM ledger ORDER BY started_at"))
    for row in rows:
        row["cost"] = int(row["cost"])
        if isinstance(row.get("metadata"), str):  # JSONB comes as text without the codec
            row["metadata"] = orjson.loads(row["metadata"])
    return rows


def scaled_env(secret: str | None = None) -> dict[str, str]:
    from tests.e2e import child_env

    return child_env(FAREBOX_SECRET=secret or secrets.token_hex(32))


def poll(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Call ``check`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL_S)  # polling interval; the deadline bounds the wait
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
