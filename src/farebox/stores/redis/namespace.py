"""Which Redis keys belong to which deployment.

A deployment is one ledger database (a PostgreSQL database and schema). All its keys live
under ``{<prefix>}:``; the prefix is ``redis_prefix`` when configured, else one chosen once
per database and kept in its ``meta`` table, so every replica agrees on it whatever host name
it uses for the database:

- a database that already holds tenants or ledger entries (it was served before prefixes
  existed) keeps the old shared prefix ``fbx``, so its budget counters carry over;
- a new database gets ``fbx-<12 hex digits of its own random id>``, so two deployments never
  meet by default.

On open the deployment claims ``{<prefix>}:owner`` with ``SET NX``. If another database owns
it, the deployment refuses to start (``ConfigError``) naming the prefix and both databases:
sharing counters or reclaiming another deployment's leases is never silent.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis

from farebox.errors import ConfigError
from farebox.stores.postgres.store import PostgresStore
from farebox.stores.redis.budgets import LEGACY_PREFIX

PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def check_prefix(prefix: str) -> str:
    """A prefix goes inside a cluster hash tag: no braces, spaces or control characters."""
    if not PREFIX_RE.fullmatch(prefix):
        raise ConfigError(
            f"redis_prefix: {prefix!r} must be 1-64 characters of letters, digits, '_', '.', "
            "':' or '-'"
        )
    return prefix


def database_label(dsn: str, schema: str) -> str:
    """The database as people name it, without its password."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    user = f"{parts.username}@" if parts.username else ""
    name = parts.path.lstrip("/") or (parts.username or "")
    where = f"postgresql://{user}{host}:{port}/{name}"
    return where if schema == "public" else f"{where} (schema {schema})"


async def database_id(pg: PostgresStore) -> str:
    """This database's own random identity, created once."""
    return await pg.put_meta_if_absent("database_id", uuid.uuid4().hex)


async def choose_prefix(pg: PostgresStore, configured: str | None) -> str:
    if configured:
        return check_prefix(configured)
    stored = await pg.get_meta("redis_prefix")
    if stored:
        return stored
    ident = await database_id(pg)
    candidate = LEGACY_PREFIX if await pg.has_data() else f"fbx-{ident[:12]}"
    return await pg.put_meta_if_absent("redis_prefix", candidate)


async def claim(client: aioredis.Redis, prefix: str, ident: str, label: str) -> None:
    """Own ``{prefix}`` for this database, or refuse: another database owns it."""
    key = "{" + prefix + "}:owner"
    mine = orjson.dumps({"database_id": ident, "database": label})
    if await client.set(key, mine, nx=True):
        return
    raw = await client.get(key)
    try:
        owner = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        owner = {"database": f"something else (the key holds {str(raw)[:60]})"}
    if owner.get("database_id") == ident:
        return
    other = owner.get("database", "another database")
    raise ConfigError(
        f"redis_prefix: the Redis keys under {{{prefix}}} belong to {other}, and this "
        f"deployment's database is {label}. Two deployments sharing one prefix would share "
        "budget counters and reclaim each other's leases. Give each deployment its own "
        "redis_prefix (or leave it unset for one derived from the database)."
    )
