"""The admin framework's own failures, in the one error format: validation and 405."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Scope

from farebox.errors import InvalidRequest, MethodNotAllowed

# Where a validation error was found: not part of the parameter's name.
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def validation_failure(errors: Sequence[Any]) -> InvalidRequest:
    """A 400 naming the first invalid parameter, as every other bad input is answered."""
    first = errors[0] if errors else {}
    loc = list(first.get("loc", ())) if isinstance(first, dict) else []
    if loc and loc[0] in _LOCATIONS:
        loc = loc[1:]
    where = ".".join(str(p) for p in loc)
    what = first.get("msg", "invalid request") if isinstance(first, dict) else "invalid request"
    message = f"{where}: {what}" if where else f"invalid request body: {what}"
    return InvalidRequest(message, param=where or None)


def allowed_methods(app: ASGIApp, scope: Scope) -> list[str]:
    """Every method some route serves at the scope's path (asked of the routes themselves)."""
    routes = getattr(app, "routes", ())
    return [
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def method_not_allowed(app: ASGIApp, scope: Scope) -> MethodNotAllowed:
    """A 405 whose ``Allow`` header lists every method the path serves."""
    allowed = ", ".join(allowed_methods(app, scope))
    return MethodNotAllowed(
        f"{scope['method']} is not allowed on {scope['path']}; use {allowed}.",
        headers={"Allow": allowed},
    )
