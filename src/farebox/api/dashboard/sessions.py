"""Dashboard sessions: an HMAC-signed session cookie, and revocation kept in the store.

The cookie carries ``payload.signature``: the payload (session id, role, tenant, key id,
expiry, revocation generation) in URL-safe base64 JSON, signed with HMAC-SHA256 under a key
derived from the app secret. Any worker of any replica with the same secret can check it, so
sessions work with ``--workers N`` and survive a restart.

Revocation lives in the store's meta table, which only ever gains rows:

- signing out writes ``dashboard_session_revoked:<sid>``;
- an admin's "revoke all sessions" writes ``dashboard_sessions_revoked:<generation>``. Every
  session carries the generation current when it was issued; a session whose generation is
  revoked is refused. The current generation is the first one not revoked: the revoked ones
  are always a prefix 0..g-1 (only the current one is ever revoked, and rows are never
  deleted), so it is found from a cached lower bound by a galloping then binary search, in
  O(log g) reads and with no upper limit.

A session ends when it expires (``dashboard.session_ttl_s``), when it is revoked, when (for
the admin) the admin credential that opened it is no longer an admin credential (a rotated
``FAREBOX_ADMIN_KEY``, the demo's per-run token gone: the session carries a fingerprint of the
admin key's hash), or (for a tenant) when its key is revoked, expires or its tenant is deleted.

Each worker remembers a checked session's answer for ``dashboard.session_check_cache_s``
(default ``LIVE_CACHE_S``; ``LiveCache``), so the
chart poll does not queue store reads behind the data plane's writes: a revocation made on
another worker or replica (or a tenant key revoked) takes effect within that time; one made on
the same worker takes effect at once.
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
LIVE_CACHE_S = 5.0  # how long a worker trusts a session check it made
LIVE_CACHE_SIZE = 10_000  # sessions remembered per worker (past it, the cache starts over)

Role = Literal["admin", "tenant"]
PLATFORM_ROLES = ("owner", "operator", "billing", "viewer")  # an admin key's, but tenant_admin


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in: an admin (``FAREBOX_ADMIN_KEY``: ``admin`` holds its fingerprint;
    an admin key: ``key_id`` and ``admin_role``), or one tenant through one of its keys or
    through a ``tenant_admin`` admin key (``admin_role`` ``tenant_admin``)."""

    sid: str
    role: Role
    expires_at: int
    generation: int
    tenant: str | None = None
    key_id: str | None = None
    admin: str | None = None  # the admin's: the fingerprint of the admin key hash it used
    admin_role: str | None = None  # an admin key's role (``identity.roles``); None: a tenant key

    @property
    def role_name(self) -> str:
        """The admin role the session acts with (``owner`` for FAREBOX_ADMIN_KEY), or
        ``tenant`` for a tenant key."""
        if self.role == "admin":
            return self.admin_role or "owner"
        return self.admin_role or "tenant"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key of its own for each use of the app secret."""
    return hmac.new(secret, f"farebox-dashboard:{purpose}".encode(), hashlib.sha256).digest()


def admin_fingerprint(secret: bytes, admin_hash: str) -> str:
    """What an admin session carries of the admin key hash it was opened with: the first 16
    bytes of an HMAC of it (names the credential, reveals nothing of it)."""
    key = derive_key(secret, "admin-fingerprint")
    return b64(hmac.new(key, admin_hash.encode(), hashlib.sha256).digest()[:16])


class LiveCache:
    """A worker's recent answers to "is this session live?", each trusted ``ttl_s``."""

    def __init__(self, clock: Callable[[], float], ttl_s: float = LIVE_CACHE_S,
                 size: int = LIVE_CACHE_SIZE) -> None:  # fmt: skip
        self._clock = clock
        self._ttl_s = ttl_s
        self._size = size
        self._answers: dict[str, tuple[bool, float]] = {}

    def get(self, sid: str) -> bool | None:
        found = self._answers.get(sid)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def put(self, sid: str, live: bool) -> None:
        if len(self._answers) >= self._size:
            self._answers.clear()
        self._answers[sid] = (live, self._clock() + self._ttl_s)

    def forget(self, sid: str | None = None) -> None:
        """One session's answer (or every answer) is stale: this worker just revoked it."""
        if sid is None:
            self._answers.clear()
        else:
            self._answers.pop(sid, None)


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
            "adm": session.admin,
            "ar": session.admin_role,
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
    tenant, key, adm = body.get("tenant"), body.get("key"), body.get("adm")
    ar = body.get("ar")
    if not isinstance(sid, str) or type(exp) is not int or type(gen) is not int:
        return None
    if role == "admin" and tenant is None:
        if key is None and isinstance(adm, str) and ar is None:  # FAREBOX_ADMIN_KEY's
            return Session(sid, "admin", exp, gen, admin=adm)
        if isinstance(key, str) and adm is None and ar in PLATFORM_ROLES:  # an admin key's
            return Session(sid, "admin", exp, gen, key_id=key, admin_role=ar)
    tenant_side = adm is None and ar in (None, "tenant_admin")  # a tenant key, a tenant_admin
    if role == "tenant" and isinstance(tenant, str) and isinstance(key, str) and tenant_side:
        return Session(sid, "tenant", exp, gen, tenant, key, admin_role=ar)
    return None


class SessionBook:
    """Issues, checks and revokes sessions; the store's meta table keeps the revocations."""

    def __init__(
        self, secret: bytes, meta: MetaStore, ttl_s: int, clock: Callable[[], float],
        cache_s: float = LIVE_CACHE_S,
    ) -> None:  # fmt: skip
        self.codec = SessionCodec(secret)
        self._meta = meta
        self.ttl_s = ttl_s
        self._clock = clock
        self._floor = 0  # every generation below it is known revoked (they only ever grow)
        self.live = LiveCache(clock, cache_s)

    def now(self) -> float:
        return self._clock()

    async def _revoked(self, gen: int) -> bool:
        return await self._meta.get_meta(f"{REVOKED_GENERATION}{gen}") is not None

    async def generation(self) -> int:
        """The first revocation generation not revoked yet (the revoked ones are a prefix):
        one read when nothing changed since the last call, O(log n) reads otherwise."""
        low = self._floor  # revoked below it; is it revoked itself?
        if not await self._revoked(low):
            return low
        step = 1
        while await self._revoked(low + step):  # gallop: low stays revoked
            low, step = low + step, step * 2
        high = low + step  # not revoked
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if await self._revoked(mid) else (low, mid)
        self._floor = high
        return high

    async def issue(self, role: Role, tenant: str | None = None, key_id: str | None = None,
                    admin: str | None = None, admin_role: str | None = None) -> str:  # fmt: skip
        expires = int(self._clock()) + self.ttl_s
        sid = b64(secrets.token_bytes(18))
        session = Session(sid, role, expires, await self.generation(), tenant, key_id, admin,
                          admin_role)  # fmt: skip
        return self.codec.encode(session)

    def decode(self, token: str | None) -> Session | None:
        """The session a cookie value signs, unexpired (no store read: not checked revoked)."""
        session = self.codec.decode(token)
        if session is None or session.expires_at <= self._clock():
            return None
        return session

    async def check(self, token: str | None) -> Session | None:
        """The live session behind a cookie value, or None (bad, expired or revoked)."""
        session = self.decode(token)
        if session is None or not await self.not_revoked(session):
            return None
        return session

    async def not_revoked(self, session: Session) -> bool:
        """Neither its generation nor the session itself is revoked (store reads)."""
        if await self._revoked(session.generation):
            return False
        return await self._meta.get_meta(f"{REVOKED_SESSION}{session.sid}") is None

    async def revoke(self, session: Session) -> None:
        await self._meta.put_meta_if_absent(f"{REVOKED_SESSION}{session.sid}", "1")
        self.live.forget(session.sid)

    async def revoke_all(self) -> None:
        """Every session issued so far stops working, on every worker and replica."""
        gen = await self.generation()
        await self._meta.put_meta_if_absent(f"{REVOKED_GENERATION}{gen}", "1")
        self.live.forget()
