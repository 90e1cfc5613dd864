"""The data plane's own ASGI dispatch.

Data-plane endpoints are looked up by exact path in a dict and called directly, skipping the
admin framework's middleware and router: the request path adds as little as possible.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from farebox.api.errors import error_response
from farebox.api.gate import Gate
from farebox.api.limits_input import InputLimits, check_head
from farebox.errors import FareboxError, MethodNotAllowed
from farebox.gateway.inflight import InFlight
from farebox.gateway.pipeline import new_request_id
from farebox.observe.traces import trace_carrier

if TYPE_CHECKING:  # tracing is optional (``farebox[otel]``)
    from farebox.observe.traces_provider import Tracing


class Incoming:
    """What a data-plane endpoint gets: the ASGI scope, ``receive`` and a header dict."""

    __slots__ = ("headers", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.headers: dict[str, str] = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }

    @property
    def client_host(self) -> str | None:
        client = self.scope.get("client")
        return str(client[0]) if client else None


class JSONBody:
    """A pre-encoded JSON response, sent with as little work as possible."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None):
        self.body = body
        self.status = status
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        if self.headers:
            raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items())
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


Endpoint = Callable[[Incoming], Awaitable[Any]]
# probes, not requests: never traced (a load balancer asks every few seconds)
UNTRACED = frozenset({"/healthz", "/readyz"})


class FastRoute:
    def __init__(self, path: str, endpoint: Endpoint, methods: Iterable[str]) -> None:
        self.path = path
        self.endpoint = endpoint
        self.methods = frozenset(m.upper() for m in methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            error = MethodNotAllowed(
                f"{scope['method']} is not allowed on {self.path}; use {allowed}.",
                headers={"Allow": allowed},
            )
            response = error_response(error)
        else:
            response = await self.endpoint(Incoming(scope, receive))
        await response(scope, receive, send)


class FareboxApp(FastAPI):
    """The admin framework's app, with data-plane routes served before its middleware.

    Every HTTP request first passes the header bounds (count, bytes, a declared body over the
    limit); a path with a trailing slash is served as the path without it (no redirect built
    from ``Host``); anything not on the data plane then goes through ``gate`` (admin key
    before the body, the body bounded while it is read) before the framework parses it.
    """

    def __init__(
        self,
        *args: Any,
        in_flight: InFlight,
        limits: InputLimits,
        gate: Gate,
        tracing: Tracing | None = None,
        **kwargs: Any,
    ) -> None:
        """``in_flight`` counts the data-plane requests being served; ``tracing`` (``None``:
        off) gives each of them a SERVER span, from its ``traceparent`` if it has one."""
        super().__init__(*args, redirect_slashes=False, **kwargs)
        self.data_plane: dict[str, FastRoute] = {}
        self.data_prefixes: list[tuple[str, FastRoute]] = []  # for paths with an id in them
        self.in_flight = in_flight
        self.limits = limits
        self.gate = gate
        self.tracing = tracing

    def add_fast_routes(self, routes: Iterable[FastRoute]) -> None:
        self.data_plane.update((route.path, route) for route in routes)

    def add_prefix_route(self, route: FastRoute) -> None:
        """A data-plane route for every path under ``route.path`` (which ends with ``/``),
        unless an exact route has the path."""
        self.data_prefixes.append((route.path, route))

    def _by_prefix(self, path: str) -> FastRoute | None:
        for prefix, route in self.data_prefixes:
            if path.startswith(prefix) and len(path) > len(prefix):
                return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            check_head(scope["headers"], self.limits)
        except FareboxError as exc:
            flavor = "anthropic" if scope["path"].startswith("/v1/messages") else "openai"
            await error_response(exc, new_request_id(), flavor=flavor)(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path[-1] == "/":
            scope = _without_trailing_slash(scope)
            path = scope["path"]
        route = self.data_plane.get(path) or self._by_prefix(path)
        if route is None:
            await self.gate(scope, receive, send, super().__call__)
            return
        in_flight = self.in_flight
        in_flight.count += 1
        try:
            if self.tracing is None or path in UNTRACED:
                await route(scope, receive, send)
            else:
                await traced(self.tracing, route, scope, receive, send)
        finally:
            in_flight.count -= 1


async def traced(tracing: Tracing, route: FastRoute, scope: Scope, receive: Receive,
                 send: Send) -> None:  # fmt: skip
    """Serve ``route`` in the request's SERVER span, which ends once the answer is sent (a
    stream's last byte, or its client gone) and knows the HTTP status answered."""
    carrier = trace_carrier(scope["headers"])
    with tracing.server(scope["method"], route.path, carrier, scope["path"]) as span:

        async def send_traced(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                span.status(message["status"])
            await send(message)

        await route(scope, receive, send_traced)


def _without_trailing_slash(scope: Scope) -> Scope:
    """``/a/b/`` is served as ``/a/b``: both spellings work, and nothing redirects."""
    path = scope["path"].rstrip("/") or "/"
    raw = scope.get("raw_path")
    raw_path = (raw.rstrip(b"/") or b"/") if isinstance(raw, bytes) else path.encode()
    return {**scope, "path": path, "raw_path": raw_path}
