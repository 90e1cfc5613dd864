"""What a verified JWT says about its caller, and what the request path needs to know of a
verifier. Free of PyJWT: the request path imports this whether or not ``auth.jwt`` is
configured; ``farebox.identity.jwt`` (which needs the ``farebox[identity]`` extra) is loaded
only when it is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

# header.payload.signature, each base64url without padding (the signature may be empty only
# for ``alg: none``, which is refused later with its own code)
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class Claims:
    """Who a verified token names, and until when it may be believed."""

    tenant: str
    user: str | None
    workspace: str | None
    expires_at: float


class TokenVerifier(Protocol):
    """Verifies a token, or raises an ``AuthenticationError`` subclass naming why not."""

    async def verify(self, token: str) -> Claims: ...


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts separated by dots (the signature may be empty)."""
    return token.count(".") == 2 and _JWT_SHAPE.match(token) is not None
