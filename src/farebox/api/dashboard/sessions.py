"""Dashboard sessions: an HMAC-signed session cookie, and revocation kept in the store.

The cookie carries ``payload.signature``: the payload (session id, role, tenant, key id,
expiry, revocation generation) in URL-safe base64 JSON, signed with HMAC-SHA256 under a key
derived from the app secret. Any worker of any replica with the same secret can check it, so
sessions work with ``--workers N`` and survive a restart.

Revocation lives in the store's meta table, which only ever gains rows:

- signing out writes ``dashboard_session_revoked:<sid>``;
- an admin's "revoke all sessions" writes ``dashboard_sessions_revoked:<generation>``. Every
  session carries the generation current when it was issued; a session whose generation is
  revoked is refused. The current generation is the first one not revoked.

A session ends when it expires (``dashboard.session_ttl_s``), when it is revoked, or (for a
tenant) when its key is revoked, expires or its tenant is deleted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from farebox.stores.base import MetaStore

COOKIE = "farebox_dashboard"
MAX_TOKEN_CHARS = 1024  # a real token is about 250 characters
REVOKED_SESSION = "dashboard_session_revoked:"
REVOKED_GENERATION = "dashboard_sessions_revoked:"
MAX_GENERATIONS = 10_000  # a bound on the scan for the current generation

Role = Literal["admin", "tenant"]


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in: the admin, or one tenant through one of its keys."""

    sid: str
    role: Role
    expires_at: int
    generation: int
    tenant: str | None = None
    key_id: str | None = None


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key of its own for each use of the app secret."""
    return hmac.new(secret, f"farebox-dashboard:{purpose}".encode(), hashlib.sha256).digest()


class SessionCodec:
    """Signs a session into a cookie value and reads one back (None when anything is off)."""

    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "session")

    def _sign(self, payload: str) -> str:
        return b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def encode(self, session: Session) -> str:
        body = {
            "sid": session.sid,
            "role": session.role,
            "exp": session.expires_at,
            "gen": session.generation,
            "tenant": session.tenant,
            "key": session.key_id,
        }
        payload = b64(orjson.dumps(body))
        return f"{payload}.{self._sign(payload)}"

    def decode(self, token: str | None) -> Session | None:
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            return None
        payload, dot, signature = token.partition(".")
        if not dot or not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            body = orjson.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        return _session(body)


def _session(body: Any) -> Session | None:
    """The session a signed payload describes, if it has the shape this module writes."""
    if not isinstance(body, dict):
        return None
    sid, role, exp, gen = body.get("sid"), body.get("role"), body.get("exp"), body.get("gen")
    tenant, key = body.get("tenant"), body.get("key")
    if not isinstance(sid, str) or type(exp) is not int or type(gen) is not int:
        return None
    if role == "admin" and tenant is None and key is None:
        return Session(sid, "admin", exp, gen)
    if role == "tenant" and isinstance(tenant, str) and isinstance(key, str):
        return Session(sid, "tenant", exp, gen, tenant, key)
    return None


class SessionBook:
    """Issues, checks and revokes sessions; the store's meta table keeps the revocations."""

    def __init__(
        self, secret: bytes, meta: MetaStore, ttl_s: int, clock: Callable[[], float]
    ) -> None:
        self.codec = SessionCodec(secret)
        self._meta = meta
        self.ttl_s = ttl_s
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    async def generation(self) -> int:
        """The first revocation generation not revoked yet."""
        for gen in range(MAX_GENERATIONS):
            if await self._meta.get_meta(f"{REVOKED_GENERATION}{gen}") is None:
                return gen
        return MAX_GENERATIONS

    async def issue(self, role: Role, tenant: str | None = None, key_id: str | None = None) -> str:
        expires = int(self._clock()) + self.ttl_s
        sid = b64(secrets.token_bytes(18))
        session = Session(sid, role, expires, await self.generation(), tenant, key_id)
        return self.codec.encode(session)

    async def check(self, token: str | None) -> Session | None:
        """The live session behind a cookie value, or None (bad, expired or revoked)."""
        session = self.codec.decode(token)
        if session is None or session.expires_at <= self._clock():
            return None
        if await self._meta.get_meta(f"{REVOKED_GENERATION}{session.generation}") is not None:
            return None
        if await self._meta.get_meta(f"{REVOKED_SESSION}{session.sid}") is not None:
            return None
        return session

    async def revoke(self, session: Session) -> None:
        await self._meta.put_meta_if_absent(f"{REVOKED_SESSION}{session.sid}", "1")

    async def revoke_all(self) -> None:
        """Every session issued so far stops working, on every worker and replica."""
        gen = await self.generation()
        await self._meta.put_meta_if_absent(f"{REVOKED_GENERATION}{gen}", "1")
