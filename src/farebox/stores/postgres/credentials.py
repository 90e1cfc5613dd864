"""Vault credentials in PostgreSQL (the ``CredentialStore`` role): ciphertext only. The
scaled store wraps it to bump the shared auth epoch (``CredentialsThatBump``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from farebox.core.credentials import Credential
from farebox.stores.credential_rows import (
    DELETE,
    EVERY,
    INSERT,
    OF_OWNER,
    ONE,
    REPLACE,
    credential_of,
    numbered,
    replace_params,
    taken,
    values,
)

MIGRATION = """
CREATE TABLE {s}.credentials (
    owner TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    provider TEXT NOT NULL,
    ciphertext BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    kek_version TEXT NOT NULL,
    last4 TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    rotated_at DOUBLE PRECISION,
    PRIMARY KEY (owner, name)
);
"""


def _in(schema: str, sql: str) -> str:
    return numbered(sql.replace("credentials", f"{schema}.credentials", 1))


class PostgresCredentials:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        self._insert, self._one = _in(schema, INSERT), _in(schema, ONE)
        self._of_owner, self._every = _in(schema, OF_OWNER), _in(schema, EVERY)
        self._replace, self._delete = _in(schema, REPLACE), _in(schema, DELETE)

    async def create_credential(self, credential: Credential) -> None:
        try:
            await self._pool().execute(self._insert, *values(credential))
        except asyncpg.UniqueViolationError:
            raise taken(credential) from None

    async def get_credential(self, owner: str, name: str) -> Credential | None:
        row = await self._pool().fetchrow(self._one, owner, name)
        return None if row is None else credential_of(tuple(row))

    async def list_credentials(self, owner: str | None = None) -> list[Credential]:
        if owner is None:
            rows = await self._pool().fetch(self._every)
        else:
            rows = await self._pool().fetch(self._of_owner, owner)
        return [credential_of(tuple(r)) for r in rows]

    async def replace_credential(self, before: Credential, after: Credential) -> bool:
        done = await self._pool().execute(self._replace, *replace_params(before, after))
        return bool(done == "UPDATE 1")

    async def delete_credential(self, owner: str, name: str) -> bool:
        done = await self._pool().execute(self._delete, owner, name)
        return bool(done == "DELETE 1")
