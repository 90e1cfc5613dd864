"""Who may see the dashboard: exchanging a key for a session cookie, reading the session back
from a request, and the checks every mutation passes (session, same origin, CSRF token).

A key is accepted once, at sign-in, and never stored, logged or echoed: the admin key is
compared by its hash in constant time; a tenant key or an admin key (``fba_``) is looked up by
its hash as the data plane does. An admin key's role goes into the session: a
``tenant_admin`` gets its tenant's view (as a tenant key does), any other role the admin
pages, with the mutations its role allows (``session_actor``). A tenant's session ends when
its key stops working, an admin key's when that key does; the FAREBOX_ADMIN_KEY session's when
the credential that opened it is no longer one (its fingerprint is signed into the session).
"""

from __future__ import annotations

import hmac
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from farebox.api.client_ip import TrustedProxies
from farebox.api.dashboard.csrf import FIELD, HEADER, CsrfGuard
from farebox.api.dashboard.sessions import (
    COOKIE,
    PLATFORM_ROLES,
    Session,
    SessionBook,
    admin_fingerprint,
)
from farebox.core.keys import hash_key
from farebox.core.records import ApiKey
from farebox.errors import AuthenticationError, FareboxError
from farebox.gateway.auth import Authenticator
from farebox.identity.roles import OWNER, AdminActor, role_of
from farebox.stores.base import AccountStore

MAX_FORM_FIELDS = 20
MAX_KEY_CHARS = 512
PATH = "/dashboard"
SecureCookies = Literal["auto", "always", "never"]


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the first value of each field); an
    undecodable one reads as empty."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return {}
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out


class Access:
    """Sign-in, sessions and CSRF for one app instance."""

    def __init__(
        self,
        book: SessionBook,
        csrf: CsrfGuard,
        auth: Authenticator,
        accounts: AccountStore,
        secret: Callable[[], bytes],
        admin_hashes: Callable[[], Iterable[str]],
        *,
        secure_cookies: SecureCookies = "auto",
        allowed_origins: Iterable[str] = (),
        proxies: TrustedProxies | None = None,
    ) -> None:
        """``secure_cookies``, ``allowed_origins``: the ``dashboard:`` settings; ``proxies``:
        the ones whose ``X-Forwarded-Proto`` is believed."""
        self.book = book
        self.csrf = csrf
        self._auth = auth
        self._accounts = accounts
        self._secret = secret
        self._admin_hashes = admin_hashes
        self._secure = secure_cookies
        self._origins = frozenset(o.lower() for o in allowed_origins)
        self._proxies = proxies if proxies is not None else TrustedProxies()

    async def exchange(self, raw_key: str) -> str | None:
        """A new session token for a presented key, or None when the key opens nothing."""
        raw_key = raw_key.strip()
        if not raw_key or len(raw_key) > MAX_KEY_CHARS:
            return None
        presented = hash_key(self._secret(), raw_key)
        matches = [h for h in self._admin_hashes() if h and hmac.compare_digest(presented, h)]
        if matches:
            return await self.book.issue("admin", admin=self._fingerprint(matches[0]))
        try:
            key = await self._auth.key_for(raw_key)
        except FareboxError:
            return None
        if key.kind == "admin":
            return await self._admin_key_session(key)
        if key.kind != "tenant" or not key.tenant_id:
            return None  # a service key acts for many tenants: it has no view of its own
        return await self.book.issue("tenant", key.tenant_id, key.id)

    async def _admin_key_session(self, key: ApiKey) -> str | None:
        """An admin key's session: a ``tenant_admin`` sees its tenant as its tenant's keys
        do; any other role the admin pages (what it may change: ``session_actor``)."""
        if key.role == "tenant_admin" and key.tenant_id:
            return await self.book.issue("tenant", key.tenant_id, key.id, admin_role=key.role)
        if key.role in PLATFORM_ROLES and key.tenant_id is None:
            return await self.book.issue("admin", key_id=key.id, admin_role=key.role)
        return None

    def _fingerprint(self, admin_hash: str) -> str:
        return admin_fingerprint(self._secret(), admin_hash)

    def _admin_live(self, session: Session) -> bool:
        """The admin credential that opened the session is still an admin credential."""
        held = session.admin or ""
        found = [hmac.compare_digest(held, self._fingerprint(h)) for h in self._admin_hashes() if h]
        return any(found)

    async def session(self, request: Request) -> Session | None:
        """The live session of a request: signed, unexpired, its credential still good (no
        I/O), and not revoked nor its key gone (store reads, remembered ``LIVE_CACHE_S``)."""
        session = self.book.decode(request.cookies.get(COOKIE))
        if session is None or (session.admin is not None and not self._admin_live(session)):
            return None
        live = self.book.live.get(session.sid)
        if live is None:
            live = await self.book.not_revoked(session) and (
                session.admin is not None or await self._key_live(session)
            )
            self.book.live.put(session.sid, live)
        return session if live else None

    async def _key_live(self, session: Session) -> bool:
        if session.admin_role is not None:
            return await self._admin_key_live(session)
        assert session.tenant is not None
        try:
            keys = await self._accounts.list_keys(session.tenant, "tenant")
        except FareboxError:
            return False
        now = self.book.now()
        return any(
            k.id == session.key_id and k.revoked_at is None
            and (k.expires_at is None or k.expires_at > now)
            for k in keys
        )  # fmt: skip

    async def _admin_key_live(self, session: Session) -> bool:
        """The admin key that opened the session still works, with the same role."""
        try:
            key = await self._accounts.get_key(session.key_id or "")
        except FareboxError:
            return False
        return (
            key is not None and key.kind == "admin" and key.role == session.admin_role
            and key.tenant_id == session.tenant and key.usable_at(self.book.now())
        )  # fmt: skip

    def mutation_ok(self, request: Request, session: Session, form: dict[str, str]) -> bool:
        """Same origin (when the browser says), and the session's own CSRF token."""
        if not self.same_origin(request):
            return False
        presented = form.get(FIELD) or request.headers.get(HEADER)
        return self.csrf.ok(session, presented)

    def same_origin(self, request: Request) -> bool:
        """A POST's ``Origin`` (sent by browsers) names this host or an allowed origin;
        absent, the token decides."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        if origin.lower() in self._origins:
            return True
        host = request.headers.get("host", "")
        parsed = urllib.parse.urlsplit(origin)
        return bool(host) and parsed.netloc == host

    def secure(self, request: Request) -> bool:
        """Whether the session cookie gets ``Secure`` (``dashboard.secure_cookies``)."""
        if self._secure != "auto":
            return self._secure == "always"
        return over_tls(request, self._proxies)

    def set_cookie(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(
            COOKIE, token, max_age=self.book.ttl_s, path=PATH, httponly=True,
            samesite="strict", secure=self.secure(request),
        )  # fmt: skip

    def clear_cookie(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path=PATH, httponly=True, samesite="strict", secure=self.secure(request),
        )  # fmt: skip


def over_tls(request: Request, proxies: TrustedProxies) -> bool:
    """The request came over TLS: as the server saw it, or as a trusted proxy (the socket
    peer) said in ``X-Forwarded-Proto`` (its first value: the client-facing hop)."""
    if request.url.scheme == "https":
        return True
    client = request.scope.get("client")
    if not client or not proxies or not proxies.is_trusted(str(client[0])):
        return False
    said = request.headers.get("x-forwarded-proto", "")
    return said.split(",")[0].strip().lower() == "https"


def session_actor(session: Session) -> AdminActor | None:
    """The admin actor a session acts as (None: a tenant key's, which changes nothing)."""
    if session.role == "admin":
        if session.admin is not None:
            return OWNER
        return AdminActor(session.key_id or "", role_of(session.admin_role))
    if session.admin_role == "tenant_admin":
        return AdminActor(session.key_id or "", "tenant_admin", session.tenant)
    return None


def require(session: Session | None) -> Session:
    if session is None:
        raise AuthenticationError("Sign in to the dashboard first.")
    return session
