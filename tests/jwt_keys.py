"""Signing keys made in the test, tokens signed with them, and a loopback JWKS server.

Usage::

    keys = TestKeys.make()
    async with JwksServer([keys.rsa, keys.ec]) as jwks:
        token = mint(keys.rsa, tenant="acme", sub="alice")
        jwks.publish([keys.ed])      # rotation
        jwks.mode = "garbage"         # or "error" (HTTP 500), "empty" (no keys)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from fakes import FakeUpstream, Recorded, Reply

ISSUER = "https://idp.example.test/"
AUDIENCE = "farebox-test"


@dataclass(frozen=True)
class Key:
    """A private key, its algorithm and kid; ``jwk`` is its public JWK."""

    private: Any
    alg: str
    kid: str

    @property
    def public(self) -> Any:
        return self.private.public_key()

    @property
    def jwk(self) -> dict[str, Any]:
        tool = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        data = dict(tool.to_jwk(self.public, as_dict=True))
        return {**data, "kid": self.kid, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return bytes(
            self.public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def rsa_key(kid: str = "rsa-1") -> Key:
    return Key(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", kid)


def ec_key(kid: str = "ec-1") -> Key:
    return Key(ec.generate_private_key(ec.SECP256R1()), "ES256", kid)


def ed_key(kid: str = "ed-1") -> Key:
    return Key(ed25519.Ed25519PrivateKey.generate(), "EdDSA", kid)


def claims(now: float | None = None, **extra: Any) -> dict[str, Any]:
    """Valid claims for tenant ``acme`` and user ``alice``, for an hour from ``now``."""
    at = int(now if now is not None else time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "iat": at, "nbf": at, "exp": at + 3600,
            "tenant": "acme", "sub": "alice"}  # fmt: skip
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def mint(key: Key, now: float | None = None, *, kid: str | None = "", **extra: Any) -> str:
    """A token signed by ``key`` (``kid``: its own unless given; None: no kid)."""
    headers = {"kid": key.kid if kid == "" else kid} if kid is not None else {}
    return jwt.encode(claims(now, **extra), key.private, algorithm=key.alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any], alg: str = "none", kid: str | None = None) -> str:
    """A token with ``alg: none`` and no signature."""
    header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}."


def hmac_signed(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 over ``payload`` with ``secret`` (e.g. a public key's PEM: the confusion attack)."""
    head = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}))
    body = b64(orjson.dumps(payload))
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def tampered(token: str, **changes: Any) -> str:
    """``token`` with its payload changed and its signature kept."""
    head, body, signature = token.split(".")
    payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    return f"{head}.{b64(orjson.dumps(payload))}.{signature}"


class JwksServer(FakeUpstream):
    """A loopback JWKS endpoint (any path). ``mode``: ``ok``, ``garbage`` (not JSON),
    ``error`` (HTTP 500), ``empty`` (``{"keys": []}``), ``oct`` (a symmetric key only)."""

    def __init__(self, keys: Iterable[Key]) -> None:
        super().__init__()
        self.mode = "ok"
        self.publish(keys)

    def publish(self, keys: Iterable[Key]) -> None:
        self.document = {"keys": [key.jwk for key in keys]}

    @property
    def url(self) -> str:
        return f"{self.root_url}/.well-known/jwks.json"

    def default_reply(self, request: Recorded) -> Reply:
        if self.mode == "garbage":
            return Reply(200, b"<html>this is not a key set</html>")
        if self.mode == "error":
            return Reply(500, {"error": "down for maintenance"})
        if self.mode == "empty":
            return Reply(200, {"keys": []})
        if self.mode == "oct":
            return Reply(200, {"keys": [{"kty": "oct", "kid": "new", "k": b64(b"s" * 32)}]})
        return Reply(200, self.document)


class Clock:
    """A clock the test moves: the gateway's, and so the JWKS refetch limit's and exp's."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
