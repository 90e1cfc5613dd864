"""Vault credentials in SQLite (the ``CredentialStore`` role): ciphertext only. Each change
bumps the auth epoch in its own transaction, then publishes it to every process."""

from __future__ import annotations

import sqlite3

from farebox.core.credentials import Credential
from farebox.stores.credential_rows import (
    DELETE,
    EVERY,
    INSERT,
    OF_OWNER,
    ONE,
    REPLACE,
    credential_of,
    replace_params,
    taken,
    values,
)
from farebox.stores.sqlite.epoch_role import EpochRole

MIGRATION = """
CREATE TABLE credentials (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    nonce BLOB NOT NULL,
    kek_version TEXT NOT NULL,
    last4 TEXT NOT NULL,
    created_at REAL NOT NULL,
    rotated_at REAL,
    PRIMARY KEY (owner, name)
) WITHOUT ROWID;
"""


class SQLiteCredentials(EpochRole):
    async def create_credential(self, credential: Credential) -> None:
        try:
            await self._change_one(INSERT, values(credential))
        except sqlite3.IntegrityError:
            raise taken(credential) from None

    async def get_credential(self, owner: str, name: str) -> Credential | None:
        row = await self._read(lambda db: db.execute(ONE, (owner, name)).fetchone())
        return None if row is None else credential_of(row)

    async def list_credentials(self, owner: str | None = None) -> list[Credential]:
        if owner is None:
            rows = await self._read(lambda db: db.execute(EVERY).fetchall())
        else:
            rows = await self._read(lambda db: db.execute(OF_OWNER, (owner,)).fetchall())
        return [credential_of(r) for r in rows]

    async def replace_credential(self, before: Credential, after: Credential) -> bool:
        return await self._change_one(REPLACE, replace_params(before, after))

    async def delete_credential(self, owner: str, name: str) -> bool:
        return await self._change_one(DELETE, (owner, name))
