"""The one upstream HTTP client (aiohttp), its SSE decoder and upstream error mapping.

One :class:`HttpClient` is shared by every provider of a process. It holds one
``aiohttp.ClientSession`` (created lazily, inside the running loop, on first use) with a
pooled keep-alive connector. Transport failures become ``UpstreamError`` (no answer:
``upstream_status=0``) or ``UpstreamTimeout``; nothing aiohttp-specific leaks out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from farebox.errors import UpstreamError, UpstreamRejected, UpstreamTimeout

# Upstream 4xx answers that are the upstream's state, not the client's mistake.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 429})
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

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        return await self._response.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    async def events(self) -> AsyncIterator[SseEvent]:
        decoder = SseDecoder()
        async for chunk in self._response.content.iter_any():
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.finish():
            yield event


class HttpClient:
    """The shared upstream client. Create it anywhere; the session starts on first use."""

    def __init__(self, *, limit: int = 0, keepalive_s: float = 30.0, dns_ttl_s: int = 300) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._dns_ttl_s = dns_ttl_s
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                keepalive_timeout=self._keepalive_s,
                ttl_dns_cache=self._dns_ttl_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # no state shared across tenants
            )
        return self._session

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> HttpResponse:
        """POST ``body`` (already JSON-encoded); return the whole response."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._get_session().post(
                url, data=body, headers=headers, timeout=timeout
            ) as response:
                data = await response.read()
                return HttpResponse(response.status, response.headers, data)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream timed out after {timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream connection failed: {_describe(exc)}") from exc

    @asynccontextmanager
    async def stream(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> AsyncIterator[UpstreamStream]:
        """POST and hold the response open; transport errors while reading are mapped too."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        session = self._get_session()
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
                yield UpstreamStream(response)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream timed out after {timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream connection failed: {_describe(exc)}") from exc

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    message = str(error.get("message") or f"upstream returned HTTP {status}")
    extra = {"provider": provider, "upstream_type": error.get("type")}
    extra["upstream_code"] = error.get("code")
    kept = passed_headers(headers or {})
    if status in (401, 403):
        # the upstream refused the gateway's own credentials: an operator problem, not the
        # client's, so it is a 502 and the upstream's message is not passed on
        text = f"the upstream provider {provider or ''} refused the gateway's credentials"
        return UpstreamError(" ".join(text.split()), upstream_status=status, extra=extra)
    if 400 <= status < 500 and status not in RETRYABLE_CLIENT_STATUSES:
        return UpstreamRejected(message, upstream_status=status, headers=kept, extra=extra)
    where = "mid-stream" if mid_stream else f"with HTTP {status}"
    text = f"upstream failed {where}: {message}"
    return UpstreamError(text, upstream_status=status, headers=kept, extra=extra)


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, provider: str = ""
) -> UpstreamError:
    return error_for_status(status, parse_error_body(body), headers, provider)
