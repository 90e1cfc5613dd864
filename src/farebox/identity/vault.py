"""The provider-credential vault: AES-256-GCM under a key-encryption key (KEK).

Each credential is sealed with a fresh random 96-bit nonce, and its owner and name are the
associated data: a ciphertext moved to another row (another name, another tenant) does not
open. The KEK comes from ``FAREBOX_KEK`` (``v2:BASE64,v1:BASE64``: several versions, the
first one current; read by ``farebox.config``) or, when that is unset, is derived from the
server secret with HKDF (version ``s1``). The version is stored beside each ciphertext, so
every configured version opens what it sealed, and ``rekey`` moves every row to the current
one, a row at a time with a compare-and-set. ``cryptography`` (the ``farebox[identity]``
extra) is imported only when a key is first sealed or opened (``Vault.ready``), so a base
install without the extra builds a vault and never touches it unless it is used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Protocol

from farebox.core.credentials import Credential, last4
from farebox.errors import VaultError, VaultUnavailable

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


NEEDS = (
    "the credential vault needs the cryptography package, which this install lacks: "
    "pip install 'farebox[identity]'"
)


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # the base install: no farebox[identity] extra
        raise VaultUnavailable(NEEDS) from None
    return AESGCM


def derive_kek(secret: bytes) -> bytes:
    """The KEK of version ``s1``: HKDF-SHA256 of the server secret."""
    try:
        from cryptography.hazmat.primitives.hashes import SHA256
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:  # the base install: no farebox[identity] extra
        raise VaultUnavailable(NEEDS) from None
    return HKDF(algorithm=SHA256(), length=KEK_BYTES, salt=_SALT, info=_INFO).derive(secret)


def associated(owner: str, name: str) -> bytes:
    """The associated data that binds a ciphertext to its row."""
    return b"farebox/credential\x00" + owner.encode() + b"\x00" + name.encode()


class Vault:
    """Seals and opens credentials. ``keks``: (version, 32-byte key) pairs, current first;
    ``derived_from``: a server secret whose HKDF key (version ``s1``) comes last. Nothing
    cryptographic happens until a key is first sealed or opened (``ready``)."""

    def __init__(
        self, keks: Sequence[tuple[str, bytes]], derived_from: bytes | None = None
    ) -> None:
        versions = [version for version, _ in keks] + (
            [DERIVED] if derived_from is not None else []
        )
        if not versions:
            raise VaultError("the credential vault has no key-encryption key")
        for version, key in keks:
            if len(key) != KEK_BYTES:
                raise VaultError(f"FAREBOX_KEK: version {version!r} is not a 32-byte key")
        self._keks = tuple(keks)
        self._derived_from = derived_from
        self.current = versions[0]
        self.versions = tuple(versions)

    @classmethod
    def of(cls, keks: Sequence[tuple[str, bytes]], secret: bytes) -> Vault:
        """The configured KEKs (the first current), then the one derived from the server
        ``secret``: current when none is configured, else still read, so that rows sealed
        before ``FAREBOX_KEK`` was set move to it with ``rekey``."""
        return cls(keks, derived_from=secret)

    @cached_property
    def _ciphers(self) -> dict[str, Any]:
        aesgcm = _aesgcm()  # VaultUnavailable without the farebox[identity] extra
        keks = list(self._keks)
        if self._derived_from is not None:
            keks.append((DERIVED, derive_kek(self._derived_from)))
        return {version: aesgcm(key) for version, key in keks}

    def ready(self) -> Vault:
        """This vault, able to seal and open: ``VaultUnavailable`` (naming the
        ``farebox[identity]`` extra) when ``cryptography`` is not installed."""
        _ = self._ciphers
        return self

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
