"""The ASGI edge in front of the admin framework: key first, then a bounded body.

Every request that is not a data-plane route passes through :class:`Gate` before FastAPI sees
it. On admin paths an admin key is checked from the headers alone (which actor it is, left in
the scope for the routes to judge its role), before a byte of the body is read; then the body
is read in chunks and counted, stopping at ``max_body_bytes`` (413), its JSON nesting is
bounded (``max_json_depth``, 400), and only then is it handed, whole, to the framework to
parse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from farebox.api.errors import error_response
from farebox.api.limits_input import InputLimits, check_depth, read_body
from farebox.errors import AuthenticationError, FareboxError

ADMIN_PREFIX = "/admin/"
ACTOR = "farebox.admin_actor"  # the scope entry the check's answer goes into, for the routes
# the headers -> who the admin key is (``farebox.api.admin.access.actor_check``), or None
KeyCheck = Callable[[Mapping[str, str]], Awaitable[object | None]]


class Gate:
    """Authenticate admin paths, then bound the body, before the framework runs."""

    def __init__(self, limits: InputLimits, key_check: KeyCheck, protected: frozenset[str]):
        """``protected``: exact paths besides ``/admin/...`` that need the admin key."""
        self.limits = limits
        self.key_check = key_check
        self.protected = protected

    def needs_key(self, path: str) -> bool:
        return path.startswith(ADMIN_PREFIX) or path in self.protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        try:
            if self.needs_key(scope["path"]):
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                actor = await self.key_check(headers)
                if actor is None:
                    raise AuthenticationError("This endpoint needs the admin key.")
                scope[ACTOR] = actor
            body = await read_bounded(receive, self.limits)
            if body:
                check_json_depth(body, self.limits.max_json_depth)
        except FareboxError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await app(scope, replay(body, receive), send)


async def read_bounded(receive: Receive, limits: InputLimits) -> bytes:
    """The whole request body, counted as it arrives; 413 as soon as it passes the limit."""
    return await read_body(receive, limits.max_body_bytes)


def check_json_depth(body: bytes, limit: int) -> None:
    """400 when a JSON body nests deeper than ``limit``; a body that is not JSON is left to
    the framework, which says what is wrong with it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    check_depth(data, limit)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` once, then waits on the real one (disconnect)."""
    pending = [body]

    async def again() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return again
