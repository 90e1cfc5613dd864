"""Vault credentials as rows (``CredentialStore``): the columns every SQL store keeps, their
statements (``?`` marks; PostgreSQL's are made from them), and ``CredentialsThatBump``, the
scaled store's wrapper that bumps its shared auth epoch after each change."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from farebox.core.credentials import Credential
from farebox.errors import Conflict

COLS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Credential))
INSERT = f"INSERT INTO credentials({','.join(COLS)}) VALUES ({','.join('?' * len(COLS))})"
SELECT = f"SELECT {','.join(COLS)} FROM credentials "
ONE = SELECT + "WHERE owner = ? AND name = ?"
OF_OWNER = SELECT + "WHERE owner = ? ORDER BY owner, name"
EVERY = SELECT + "ORDER BY owner, name"
REPLACE = (
    "UPDATE credentials SET ciphertext = ?, nonce = ?, kek_version = ?, last4 = ?, "
    "rotated_at = ? WHERE owner = ? AND name = ? AND ciphertext = ?"
)
DELETE = "DELETE FROM credentials WHERE owner = ? AND name = ?"


def numbered(sql: str) -> str:
    """``sql`` with PostgreSQL's ``$1, $2, ...`` for its ``?`` marks."""
    parts = sql.split("?")
    return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))


def values(c: Credential) -> list[Any]:
    return [getattr(c, col) for col in COLS]


def credential_of(row: Sequence[Any]) -> Credential:
    fields = dict(zip(COLS, row, strict=True))
    fields["ciphertext"] = bytes(fields["ciphertext"])
    fields["nonce"] = bytes(fields["nonce"])
    return Credential(**fields)


def replace_params(before: Credential, after: Credential) -> tuple[Any, ...]:
    return (after.ciphertext, after.nonce, after.kek_version, after.last4, after.rotated_at,
            before.owner, before.name, before.ciphertext)  # fmt: skip


def taken(c: Credential) -> Conflict:
    who = f"tenant {c.owner!r}" if c.owner else "the platform"
    return Conflict(f"{who} already has a credential named {c.name!r}; rotate it instead")


class CredentialsThatBump:
    """A ``CredentialStore`` whose every change is followed by ``bump``."""

    def __init__(self, inner: Any, bump: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._bump = bump

    async def create_credential(self, credential: Credential) -> None:
        await self._inner.create_credential(credential)
        await self._bump()

    async def get_credential(self, owner: str, name: str) -> Credential | None:
        found: Credential | None = await self._inner.get_credential(owner, name)
        return found

    async def list_credentials(self, owner: str | None = None) -> list[Credential]:
        return list(await self._inner.list_credentials(owner))

    async def replace_credential(self, before: Credential, after: Credential) -> bool:
        won = bool(await self._inner.replace_credential(before, after))
        if won:
            await self._bump()
        return won

    async def delete_credential(self, owner: str, name: str) -> bool:
        gone = bool(await self._inner.delete_credential(owner, name))
        if gone:
            await self._bump()
        return gone
