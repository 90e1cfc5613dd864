"""CSRF protection of the dashboard's mutations: a synchronizer token bound to the session.

The token is an HMAC of the session id under a key derived from the app secret, so each
session has its own, any worker can check it, and it dies with the session. Every form that
changes something carries it in a hidden ``csrf_token`` field (or a script sends it in the
``X-CSRF-Token`` header); a mutation without the right one is refused with 403. The session
cookie is also ``SameSite=Strict``: this is the second lock, not the only one.
"""

from __future__ import annotations

import hashlib
import hmac

from farebox.api.dashboard.sessions import Session, b64, derive_key

FIELD = "csrf_token"
HEADER = "x-csrf-token"
MAX_TOKEN_CHARS = 128


class CsrfGuard:
    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "csrf")

    def token(self, session: Session) -> str:
        return b64(hmac.new(self._key, session.sid.encode(), hashlib.sha256).digest())

    def ok(self, session: Session, presented: str | None) -> bool:
        """Whether ``presented`` is this session's token (compared in constant time)."""
        if not presented or len(presented) > MAX_TOKEN_CHARS or not presented.isascii():
            return False
        return hmac.compare_digest(self.token(session), presented)
