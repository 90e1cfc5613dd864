"""The one upstream HTTP client, its SSE decoder and upstream error mapping.

One :class:`HttpClient` is shared by every provider of a process. Its transport is the
lean keep-alive HTTP/1.1 client in ``farebox.http.http1`` (chosen by benchmark over
aiohttp's client, which cost about a third of the gateway's CPU per request). Transport
failures become ``UpstreamError`` (no answer: ``upstream_status=0``) or ``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from farebox.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from farebox.http.http1 import (
    Connection,
    Pool,
    Target,
    body_chunks,
    exchange,
    request_head,
)
from farebox.http.sanitize import identifier, scrub

# Upstream 4xx answers that are the upstream's state, not the client's mistake.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 429})
# Upstream answers about the gateway's own account with the provider.
ACCOUNT_STATUSES = frozenset({401, 402, 403, 404})
log = logging.getLogger("farebox.providers")


# Response headers worth handing to the pipeline (and, for 429s, to the client).
_PASSED_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: ``event`` is "" when the frame had no ``event:`` line."""

    event: str
    data: bytes


class SseDecoder:
    """Incremental SSE decoder: feed raw bytes, get complete events back."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        events: list[SseEvent] = []
        for line in lines:
            event = self._line(line[:-1] if line.endswith(b"\r") else line)
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> list[SseEvent]:
        """At end of input: dispatch complete lines not yet closed by a blank line."""
        event = self._line(b"")
        return [event] if event is not None else []

    def _line(self, line: bytes) -> SseEvent | None:
        if not line:
            return self._dispatch()
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(self._event, b"\n".join(self._data))
        self._event, self._data = "", []
        return event


class UpstreamStream:
    """An open upstream response whose body is read incrementally."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def read(self) -> bytes:
        return await self._conn.read_all()

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in body_chunks(self._conn):
            yield chunk

    async def events(self) -> AsyncIterator[SseEvent]:
        decoder = SseDecoder()
        async for chunk in body_chunks(self._conn):
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.finish():
            yield event


class HttpClient:
    """The shared upstream client: pooled keep-alive HTTP/1.1 connections (``http1``)."""

    def __init__(self, *, keepalive_s: float = 30.0) -> None:
        self._pool = Pool(keepalive_s)
        self._targets: dict[str, Target] = {}

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:  # URLs come only from config: this dict stays small
            target = self._targets[url] = Target.parse(url)
        return target

    async def _open(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float,
        method: bytes = b"POST", query: str = "",
    ) -> tuple[Target, Connection, asyncio.TimerHandle]:  # fmt: skip
        target = self._target(url)
        if query:  # the query varies per call (a page cursor): never a key of ``_targets``
            target = replace(target, path=target.path + b"?" + query.encode("ascii"))
        head = request_head(target, headers, len(body), method)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s  # one deadline for the whole exchange
        try:
            async with asyncio.timeout_at(deadline):
                conn = await exchange(self._pool, target, head, body, timeout_s)
        except TimeoutError:
            raise UpstreamTimeout(f"upstream timed out after {timeout_s:g}s") from None
        # reading the body is bounded by the same deadline, set on the connection itself so
        # that it holds whichever task reads the body
        error = UpstreamTimeout(f"upstream timed out after {timeout_s:g}s")
        return target, conn, loop.call_at(deadline, conn.fail, error)

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> HttpResponse:
        """POST ``body`` (already JSON-encoded); return the whole response."""
        return await self._whole(url, headers, body, timeout_s)

    async def get_json(
        self, url: str, query: Mapping[str, str | int], headers: Mapping[str, str],
        timeout_s: float,
    ) -> HttpResponse:  # fmt: skip
        """GET ``url`` (from config) with ``query`` (percent-encoded here); the whole response."""
        encoded = urlencode(list(query.items()), quote_via=quote)
        return await self._whole(url, headers, b"", timeout_s, b"GET", encoded)

    async def _whole(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float,
        method: bytes = b"POST", query: str = "",
    ) -> HttpResponse:  # fmt: skip
        """Send a request and read its whole response, within one deadline."""
        target, conn, deadline = await self._open(url, headers, body, timeout_s, method, query)
        status, response_headers = conn.status, conn.headers
        try:
            data = await conn.read_all()
        finally:
            deadline.cancel()
            self._pool.give_back(target, conn)
        return HttpResponse(status, response_headers, data)

    @asynccontextmanager
    async def stream(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> AsyncIterator[UpstreamStream]:
        """POST and hold the response open while the caller reads it."""
        target, conn, deadline = await self._open(url, headers, body, timeout_s)
        try:
            yield UpstreamStream(conn)
        finally:
            deadline.cancel()
            self._pool.give_back(target, conn)

    async def aclose(self) -> None:
        self._pool.close()


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The retry hints of an upstream response (``Retry-After`` and friends)."""
    found = {name: headers.get(name) for name in _PASSED_HEADERS}
    renamed = {"retry-after": "Retry-After"}
    return {renamed.get(name, name): value for name, value in found.items() if value}


def parse_error_body(body: bytes) -> dict[str, Any]:
    """The ``error`` object of an OpenAI or Anthropic error body, or {} if there is none."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return error
    return {"message": error} if isinstance(error, str) else {}


def error_for_status(
    status: int,
    error: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    provider: str = "",
    *,
    mid_stream: bool = False,
) -> UpstreamError:
    """Map an upstream failure to the error tree: client 4xx -> ``UpstreamRejected``."""
    message = scrub(str(error.get("message") or f"upstream returned HTTP {status}"))
    log.warning("upstream %s answered HTTP %s: %s", provider, status, message)
    extra = {"provider": provider, "upstream_type": identifier(error.get("type"))}
    extra["upstream_code"] = identifier(error.get("code"))
    kept = passed_headers(headers or {})
    if status in ACCOUNT_STATUSES:
        # the upstream refused the gateway's own account (credentials, billing, a model the
        # account lacks): an operator problem, not the client's. A 502, with no upstream text.
        text = f"the upstream provider {provider} refused the gateway's account (HTTP {status})"
        return UpstreamError(" ".join(text.split()), upstream_status=status)
    if 400 <= status < 500 and status not in RETRYABLE_CLIENT_STATUSES:
        return UpstreamRejected(message, upstream_status=status, headers=kept, extra=extra)
    where = "mid-stream" if mid_stream else f"with HTTP {status}"
    text = f"upstream failed {where}: {message}"
    wait = retry_after_s(headers or {})
    return UpstreamError(text, upstream_status=status, headers=kept, extra=extra, retry_after=wait)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds an upstream asked to wait (``retry-after-ms`` or ``Retry-After`` in seconds)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: not worth parsing for a retry inside one request
        if seconds >= 0:
            return seconds
    return None


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, provider: str = ""
) -> UpstreamError:
    return error_for_status(status, parse_error_body(body), headers, provider)
