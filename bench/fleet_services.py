"""The fleet bench's own services: a PostgreSQL database and redis-servers, on loopback.

``postgres_database()`` creates ``farebox_bench_<random>`` on the local server and drops it on
the way out, whatever happened (``DROP DATABASE ... WITH (FORCE)``, so a replica left behind
cannot keep it alive). ``redis_server()`` starts a ``redis-server`` of its own on a free
loopback port (never the shared 6379), so its ``INFO cpu`` counts only the bench's commands.
``RedisCpu`` reads ``used_cpu_sys + used_cpu_user`` from each node of a single Redis or a
cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.gateway import free_port
from bench.procs import stop_popen

PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
START_TIMEOUT_S = 15.0


class ServiceError(RuntimeError):
    """A service the fleet bench needs could not be reached or started."""


# --- PostgreSQL -------------------------------------------------------------------------


async def _admin(user: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=user, database="postgres", timeout=5
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _status(user: str) -> dict[str, object]:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=user, database="postgres", timeout=5
    )
    try:
        return {
            "version": await conn.fetchval("SHOW server_version"),
            "max_connections": int(await conn.fetchval("SHOW max_connections")),
            "connections_in_use": int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity")),
            "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
            "fsync": await conn.fetchval("SHOW fsync"),
        }
    finally:
        await conn.close()


def postgres_status(database_url: str) -> dict[str, object]:
    """The server's settings that bound the fleet (connections) or shape its latency (commit)."""
    user = database_url.removeprefix("postgresql://").split("@", 1)[0]
    try:
        return asyncio.run(_status(user))
    except Exception as exc:  # noqa: BLE001 - informational only
        return {"error": f"{type(exc).__name__}: {exc}"}


def _pg_user() -> str:
    """The first of ``postgres`` and the current user the server lets in (trust auth)."""
    problems = []
    for user in dict.fromkeys(["postgres", getpass.getuser()]):
        try:
            asyncio.run(_admin(user, "SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - reported together below
            problems.append(f"{user}: {type(exc).__name__}: {exc}")
            continue
        return user
    raise ServiceError(f"PostgreSQL on {PG_HOST}:{PG_PORT}: " + "; ".join(problems))


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """Create a database of the bench's own; yield its URL; drop it on the way out."""
    user = _pg_user()
    name = "farebox_bench_" + secrets.token_hex(6)
    try:
        asyncio.run(_admin(user, f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - the row says why
        raise ServiceError(f"CREATE DATABASE {name}: {type(exc).__name__}: {exc}") from None
    try:
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _drop(user, name)


def _drop(user: str, name: str) -> None:
    try:
        asyncio.run(_admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception as exc:  # noqa: BLE001 - said loudly, not raised over the first error
        print(
            f"[bench] could NOT drop database {name} ({type(exc).__name__}: {exc}); drop it by "
            f"hand: psql -h {PG_HOST} -U {user} -c 'DROP DATABASE \"{name}\"'",
            file=sys.stderr,
            flush=True,
        )


# --- Redis ------------------------------------------------------------------------------


def _ping(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway ``redis-server`` on a free loopback port; yields the port."""
    if shutil.which("redis-server") is None:
        raise ServiceError("redis-server is not installed (Debian package redis-server)")
    if importlib.util.find_spec("redis") is None:
        raise ServiceError("the redis package is not installed (pip install 'farebox[redis]')")
    directory = Path(tempfile.mkdtemp(prefix="farebox-bench-redis-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        cmd = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        yield port
    finally:
        if proc is not None:
            stop_popen(proc)
        shutil.rmtree(directory, ignore_errors=True)


class RedisCpu:
    """CPU seconds (system + user) each Redis node has used, from ``INFO cpu``."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports

    def sample(self) -> list[float]:
        import redis

        seconds = []
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
            try:
                info = client.info("cpu")
            finally:
                client.close()
            seconds.append(float(info["used_cpu_sys"]) + float(info["used_cpu_user"]))
        return seconds

    def calls(self) -> dict[str, int]:
        """Calls per command (``INFO commandstats``, commands run inside scripts included),
        summed over the nodes; the bench's own INFO and DBSIZE left out."""
        import redis

        total: dict[str, int] = {}
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
            try:
                stats = client.info("commandstats")
            finally:
                client.close()
            for name, value in stats.items():
                command = name.removeprefix("cmdstat_")
                if command not in ("info", "dbsize") and isinstance(value, dict):
                    total[command] = total.get(command, 0) + int(value.get("calls", 0))
        return total

    def keys(self) -> list[int]:
        """How many keys each node holds (``DBSIZE``), to see a cluster spread."""
        import redis

        counts = []
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
            try:
                counts.append(int(client.dbsize()))
            finally:
                client.close()
        return counts
