"""Vault credentials in process (the ``CredentialStore`` role)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from farebox.core.credentials import Credential
from farebox.stores.credential_rows import taken


class MemoryCredentials:
    def __init__(self, bump: Callable[[], None]) -> None:
        self._rows: dict[tuple[str, str], Credential] = {}
        self._bump = bump  # the auth epoch: every worker sees a rotation

    async def create_credential(self, credential: Credential) -> None:
        key = (credential.owner, credential.name)
        if key in self._rows:
            raise taken(credential)
        self._rows[key] = credential
        self._bump()

    async def get_credential(self, owner: str, name: str) -> Credential | None:
        return self._rows.get((owner, name))

    async def list_credentials(self, owner: str | None = None) -> list[Credential]:
        return [c for k, c in sorted(self._rows.items()) if owner is None or k[0] == owner]

    async def replace_credential(self, before: Credential, after: Credential) -> bool:
        key = (before.owner, before.name)
        found = self._rows.get(key)
        if found is None or found.ciphertext != before.ciphertext:
            return False
        self._rows[key] = dataclasses.replace(
            found, ciphertext=after.ciphertext, nonce=after.nonce, kek_version=after.kek_version,
            last4=after.last4, rotated_at=after.rotated_at,
        )  # fmt: skip
        self._bump()
        return True

    async def delete_credential(self, owner: str, name: str) -> bool:
        if self._rows.pop((owner, name), None) is None:
            return False
        self._bump()
        return True
