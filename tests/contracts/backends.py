"""Every store backend the contracts run against, built fresh for one test: in memory, SQLite
(shared, and owned by one process), PostgreSQL alone, and PostgreSQL plus Redis (the
replicas' store). ``opened`` opens one and removes what it left in the servers afterwards.

PostgreSQL and Redis are expected on 127.0.0.1 (ports 5432 and 6379). Without them a test
that needs them skips, unless ``FAREBOX_REQUIRE_SERVICES=1`` (as in CI): then it fails.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from farebox.stores.memory.store import MemoryStore
from farebox.stores.sqlite.store import SQLiteStore

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def require(what: str, *services: tuple[str, int]) -> None:
    """Skip (or, with ``FAREBOX_REQUIRE_SERVICES=1``, fail) unless every service listens."""
    missing = [name for name, port in services if not listening(port)]
    if missing:
        message = f"{' and '.join(missing)} on 127.0.0.1 not running: {what} untested"
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def make_memory(tmp_path: Path) -> Any:
    return MemoryStore()


def make_sqlite(tmp_path: Path) -> Any:
    return SQLiteStore(tmp_path / "x.db")


def make_single(tmp_path: Path) -> Any:
    """SQLite owned by one process: counters in memory, reservations journalled."""
    from farebox.stores.sqlite.single import SingleProcessSQLiteStore

    return SingleProcessSQLiteStore(tmp_path / "single.db")


def make_postgres(tmp_path: Path, schema: str | None = None) -> Any:
    """PostgreSQL alone, in a fresh schema (or ``schema``: a second store on the same one)."""
    require("PostgreSQL store", ("PostgreSQL", 5432))
    from farebox.stores.postgres.store import PostgresStore

    name = schema or f"farebox_contract_{uuid.uuid4().hex[:12]}"
    return PostgresStore(PG_DSN, schema=name, pool_min=1, pool_max=4)


def make_scaled(tmp_path: Path) -> Any:
    """PostgreSQL (a fresh schema) plus Redis (a fresh key prefix): the replicas' backend."""
    require("scaled store", ("PostgreSQL", 5432), ("Redis", 6379))
    import redis.asyncio as aioredis

    from farebox.stores.postgres.store import PostgresStore
    from farebox.stores.redis.budgets import RedisBudgets
    from farebox.stores.scaled import ScaledStore

    tag = uuid.uuid4().hex[:12]
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    pg = PostgresStore(PG_DSN, schema=f"farebox_budget_{tag}", pool_min=1, pool_max=4)
    return ScaledStore(pg, RedisBudgets(client, prefix=f"fbxtest{tag}"), client)


async def drop_schema(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def drop_scaled(s: Any) -> None:
    """Remove the scaled store's schema and every Redis key under its prefix."""
    await drop_schema(s._pg._schema)
    prefix = s._budgets.key_prefix
    for pattern in (f"{prefix}*", f"{prefix[:-1]}/t/*"):  # and tenant slots' (issue 18)
        async for key in s._client.scan_iter(match=pattern):
            await s._client.delete(key)


FACTORIES: dict[str, Callable[[Path], Any]] = {
    "memory": make_memory,
    "sqlite": make_sqlite,
    "sqlite-single-process": make_single,
    "postgres": make_postgres,
    "postgres+redis": make_scaled,
}
EVERY = tuple(sorted(FACTORIES))
ALL_IN_ONE = ("memory", "postgres+redis", "sqlite", "sqlite-single-process")  # a whole Store


@contextlib.asynccontextmanager
async def opened(name: str, tmp_path: Path) -> AsyncIterator[Any]:
    """The backend ``name``, open; closed and removed afterwards."""
    s = FACTORIES[name](tmp_path)
    await s.open()
    try:
        yield s
    finally:
        if name == "postgres+redis":
            await drop_scaled(s)
        await s.close()
        if name == "postgres":
            await drop_schema(s._schema)
