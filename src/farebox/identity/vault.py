"""The provider-credential vault: AES-256-GCM under a key-encryption key (KEK).

Each credential is sealed with a fresh random 96-bit nonce, and its owner and name are the
associated data: a ciphertext moved to another row (another name, another tenant) does not
open. The KEK comes from ``FAREBOX_KEK`` (``v2:BASE64,v1:BASE64``: several versions, the
first one current; read by ``farebox.config``) or, when that is unset, is derived from the
server secret with HKDF (version ``s1``). The version is stored beside each ciphertext, so
every configured version opens what it sealed, and ``rekey`` moves every row to the current
one, a row at a time with a compare-and-set. ``cryptography`` (the ``farebox[identity]``
extra) is imported only when a vault is made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Protocol

from farebox.core.credentials import Credential, last4
from farebox.errors import VaultError

DERIVED = "s1"  # the version of a KEK derived from the server secret
NONCE_BYTES = 12
KEK_BYTES = 32
_SALT = b"farebox/kek"
_INFO = b"farebox credential vault " + DERIVED.encode()


class Rows(Protocol):
    """What ``rekey`` needs of a ``CredentialStore``."""

    async def list_credentials(self, owner: str | None = None) -> list[Credential]: ...

    async def get_credential(self, owner: str, name: str) -> Credential | None: ...

    async def replace_credential(self, before: Credential, after: Credential) -> bool: ...


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise VaultError(
            "the credential vault needs the cryptography package: pip install 'farebox[identity]'"
        ) from None
    return AESGCM


def derive_kek(secret: bytes) -> bytes:
    """The KEK of version ``s1``: HKDF-SHA256 of the server secret."""
    try:
        from cryptography.hazmat.primitives.hashes import SHA256
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise VaultError(
            "the credential vault needs the cryptography package: pip install 'farebox[identity]'"
        ) from None
    return HKDF(algorithm=SHA256(), length=KEK_BYTES, salt=_SALT, info=_INFO).derive(secret)


def associated(owner: str, name: str) -> bytes:
    """The associated data that binds a ciphertext to its row."""
    return b"farebox/credential\x00" + owner.encode() + b"\x00" + name.encode()


class Vault:
    """Seals and opens credentials. ``keks``: (version, 32-byte key) pairs, current first."""

    def __init__(self, keks: Sequence[tuple[str, bytes]]) -> None:
        if not keks:
            raise VaultError("the credential vault has no key-encryption key")
        aesgcm = _aesgcm()
        for version, key in keks:
            if len(key) != KEK_BYTES:
                raise VaultError(f"FAREBOX_KEK: version {version!r} is not a 32-byte key")
        self._ciphers = {version: aesgcm(key) for version, key in keks}
        self.current = keks[0][0]
        self.versions = tuple(version for version, _ in keks)

    @classmethod
    def of(cls, keks: Sequence[tuple[str, bytes]], secret: bytes) -> Vault:
        """The configured KEKs (the first current), then the one derived from the server
        ``secret``: current when none is configured, else still read, so that rows sealed
        before ``FAREBOX_KEK`` was set move to it with ``rekey``."""
        return cls([*keks, (DERIVED, derive_kek(secret))])

    def seal(self, owner: str, name: str, provider: str, secret: str, now: float) -> Credential:
        """A new credential holding ``secret``, under the current KEK."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(
            nonce, secret.encode(), associated(owner, name)
        )
        return Credential(owner, name, provider, sealed, nonce, self.current, last4(secret), now)

    def rotated(self, before: Credential, secret: str, now: float) -> Credential:
        """``before`` holding a new ``secret`` (same owner, name and creation time)."""
        made = self.seal(before.owner, before.name, before.provider, secret, now)
        return dataclasses.replace(made, created_at=before.created_at, rotated_at=now)

    def open(self, credential: Credential) -> str:
        """The secret, or ``VaultError`` (its version is not configured, or the row was
        altered or moved)."""
        cipher = self._ciphers.get(credential.kek_version)
        if cipher is None:
            raise VaultError(
                f"credential {credential.name!r} is sealed under key-encryption key version "
                f"{credential.kek_version!r}, which FAREBOX_KEK does not hold "
                f"(configured: {', '.join(self.versions)})"
            )
        try:
            plain = cipher.decrypt(
                credential.nonce, credential.ciphertext,
                associated(credential.owner, credential.name),
            )  # fmt: skip
        except Exception:  # cryptography's InvalidTag: never show what was tried
            raise VaultError(
                f"credential {credential.name!r} does not open: altered, or moved from another row"
            ) from None
        return bytes(plain).decode()

    def resealed(self, credential: Credential) -> Credential:
        """``credential`` sealed afresh under the current KEK (its times unchanged)."""
        made = self.seal(
            credential.owner, credential.name, credential.provider, self.open(credential), 0.0
        )
        return dataclasses.replace(
            made, created_at=credential.created_at, rotated_at=credential.rotated_at,
            last4=credential.last4,
        )  # fmt: skip


async def rekey(store: Rows, vault: Vault) -> tuple[int, int]:
    """Re-seal every credential not under the current KEK, one row at a time, each with a
    compare-and-set (a row rotated meanwhile is read again). Until it is done, any
    configured version still opens the rows not yet moved. Returns (moved, already current)."""
    moved = current = 0
    for listed in await store.list_credentials(None):
        row: Credential | None = listed
        while row is not None and row.kek_version != vault.current:
            if await store.replace_credential(row, vault.resealed(row)):
                moved += 1
                break
            row = await store.get_credential(row.owner, row.name)  # changed meanwhile
        else:
            current += 1 if row is not None else 0
    return moved, current
