"""API key generation and keyed hashing (pure; randomness is passed in)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

TENANT_PREFIX = "fbx_"
SERVICE_PREFIX = "fbs_"
ADMIN_PREFIX = "fba_"
JWT_KEY_PREFIX = "jwt:"  # a JWT caller's synthetic key id: ``jwt:<tenant>``, never stored
KEY_BYTES = 32  # 256 bits of randomness


def new_key(prefix: str, token: Callable[[int], str]) -> str:
    """``prefix`` plus ``token(KEY_BYTES)`` (e.g. ``secrets.token_urlsafe``)."""
    return prefix + token(KEY_BYTES)


def hash_key(secret: bytes, key: str) -> str:
    """HMAC-SHA256 of the key under the server secret, hex."""
    return hmac.new(secret, key.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    """A short, non-secret prefix to recognise a key in listings."""
    return key[:10]


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(
        a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape")
    )
