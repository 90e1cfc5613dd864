"""What the Redis response cache writes: sealed blobs and names that reveal nothing.

Each tenant has keys of its own, derived from the server secret with HKDF-SHA256 (the
tenant id in ``info``): an AES-256-GCM key for the blobs and an HMAC key for names. A blob is
``version | nonce (12 random bytes) | ciphertext+tag``; its associated data binds the tenant,
the namespace and the entry key (and, for a vector, the semantic context), so a blob copied
under another tenant's (or namespace's, or entry's) key fails to open: a miss, never a hit.

Key names carry no prompt, answer, namespace or request hash in the clear: the namespace,
the entry key and the context are HMACs under the tenant's name key, so a stolen dump cannot
even confirm a guessed request by hashing it.

``cryptography`` is the ``farebox[redis]`` extra: imported when a ``CacheCipher`` is made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import TYPE_CHECKING, Any

from farebox.core.cache import CachedAnswer
from farebox.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
NONCE = 12
ID_CHARS = 32  # hex characters of a name's HMAC (128 bits)
MAX_TENANTS = 10_000  # derived keys kept, at most (then the cache of them starts over)
_HEAD = struct.Struct(">I")


def aead_class() -> Any:
    """``AESGCM``, or an error naming the extra that brings it."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ConfigError(
            "the Redis response cache needs cryptography: pip install 'farebox[redis]'"
        ) from exc
    return AESGCM


def _hkdf(secret: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"farebox cache", info=info).derive(
        secret
    )


def _bind(*parts: str) -> bytes:
    return json.dumps(["farebox-cache/1", *parts], separators=(",", ":")).encode()


def entry_aad(tenant: str, namespace: str, key: str) -> bytes:
    return _bind("entry", tenant, namespace, key)


def vector_aad(tenant: str, namespace: str, context: str, member: str) -> bytes:
    return _bind("vector", tenant, namespace, context, member)


class TenantKeys:
    """One tenant's AEAD and name key."""

    __slots__ = ("aead", "_mac")

    def __init__(self, secret: bytes, tenant: str, aead: Any) -> None:
        t = tenant.encode()
        self.aead: AESGCM = aead(_hkdf(secret, b"farebox cache aes-gcm\x00" + t))
        self._mac = _hkdf(secret, b"farebox cache names\x00" + t)

    def name(self, *parts: str) -> str:
        """An opaque, stable id of ``parts`` (hex)."""
        msg = "\x00".join(parts).encode()
        return hmac.new(self._mac, msg, hashlib.sha256).hexdigest()[:ID_CHARS]


class CacheCipher:
    """Seals and opens a tenant's blobs; names its keys."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigError("the Redis response cache needs a server secret of 16 bytes or more")
        self._aead = aead_class()
        self._secret = secret
        self._tenants: dict[str, TenantKeys] = {}

    def keys(self, tenant: str) -> TenantKeys:
        keys = self._tenants.get(tenant)
        if keys is None:
            if len(self._tenants) >= MAX_TENANTS:
                self._tenants.clear()
            keys = self._tenants[tenant] = TenantKeys(self._secret, tenant, self._aead)
        return keys

    def seal(self, tenant: str, aad: bytes, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        sealed = self.keys(tenant).aead.encrypt(nonce, plaintext, aad)
        return VERSION + nonce + sealed

    def open(self, tenant: str, aad: bytes, blob: bytes) -> bytes | None:
        """The plaintext, or None when the blob is not this tenant's for ``aad`` (or is not
        a blob at all)."""
        from cryptography.exceptions import InvalidTag

        if len(blob) < 1 + NONCE + 16 or blob[:1] != VERSION:
            return None
        nonce, sealed = blob[1 : 1 + NONCE], blob[1 + NONCE :]
        try:
            plain = self.keys(tenant).aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            return None
        return plain


# what is sealed ------------------------------------------------------------------------------
def pack_answer(answer: CachedAnswer) -> bytes:
    head = json.dumps(
        [
            answer.kind,
            answer.model_served,
            answer.provider,
            answer.cost,
            answer.revenue,
            answer.input_tokens,
            answer.output_tokens,
            answer.created_at,
            answer.expires_at,
            answer.prompt,
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return _HEAD.pack(len(head)) + head + answer.body


def unpack_answer(key: str, plain: bytes) -> CachedAnswer | None:
    try:
        (size,) = _HEAD.unpack_from(plain)
        f = json.loads(plain[4 : 4 + size])
        return CachedAnswer(
            key=key,
            kind=str(f[0]),
            body=plain[4 + size :],
            model_served=str(f[1]),
            provider=str(f[2]),
            cost=int(f[3]),
            revenue=int(f[4]),
            input_tokens=int(f[5]),
            output_tokens=int(f[6]),
            created_at=float(f[7]),
            expires_at=float(f[8]),
            prompt=str(f[9]),
        )
    except (ValueError, IndexError, TypeError, struct.error):
        return None


def pack_vector(key: str, vector: bytes) -> bytes:
    k = key.encode()
    return _HEAD.pack(len(k)) + k + vector


def unpack_vector(plain: bytes) -> tuple[str, bytes] | None:
    try:
        (size,) = _HEAD.unpack_from(plain)
        return plain[4 : 4 + size].decode(), plain[4 + size :]
    except (struct.error, UnicodeDecodeError):
        return None
