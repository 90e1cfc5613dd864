"""A lean HTTP/1.1 client transport: keep-alive connection pools and httptools parsing.

The upstream call is the one network wait on the request path, so its client must cost
little. This transport does only what an LLM upstream needs: POST with a byte body, a
response read whole or incrementally (SSE), TLS for https, and pooled keep-alive
connections. Failures surface as ``UpstreamError``/``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from farebox.errors import UpstreamError, UpstreamTimeout

log = logging.getLogger("farebox.providers")
READ_HIGH_WATER = 1 << 20  # pause reading when this much body is buffered


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed upstream URL."""

    key: tuple[str, str, int]
    host_header: bytes
    path: bytes

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"unsupported upstream URL {url!r}")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError:
            raise UpstreamError(f"invalid port in upstream URL {url!r}") from None
        default = port == (443 if tls else 80)
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host = name if default else f"{name}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls((parts.scheme, parts.hostname, port), host.encode("idna"), path.encode())


def request_head(
    target: Target, headers: Mapping[str, str], length: int, method: bytes = b"POST"
) -> bytes:
    lines = [method + b" " + target.path + b" HTTP/1.1", b"host: " + target.host_header]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamError(f"invalid characters in upstream header {name!r}")
        try:
            lines.append(f"{name}: {value}".encode("latin-1"))
        except UnicodeEncodeError:
            raise UpstreamError(f"upstream header {name!r} is not latin-1 text") from None
    lines.append(b"content-length: " + str(length).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Connection(asyncio.Protocol):
    """One upstream connection carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.used = 0
        self.idle_since = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.complete = False
        self.received = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._headers_done: asyncio.Future[None] = self._loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(UpstreamError(f"upstream sent an invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            until_close = "content-length" not in self.headers and (
                "chunked" not in self.headers.get("transfer-encoding", "")
            )
            if self._headers_done.done() and until_close and exc is None:
                self.on_message_complete()
            else:
                self.fail(UpstreamError("upstream closed the connection mid-response"))

    # httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        if not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and self._transport and not self._paused:
            self._transport.pause_reading()
            self._paused = True
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # exchange -------------------------------------------------------------------------
    def fail(self, error: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = error
        if not self._headers_done.done():
            self._headers_done.set_exception(error)
            self._headers_done.exception()  # mark retrieved; the caller re-raises it
        self._wake()
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send(self, head: bytes, body: bytes) -> None:
        if self._transport is None or self.closed:
            raise UpstreamError("upstream connection is closed")
        self.used += 1
        self.received = 0
        self._transport.write(head + body)

    async def headers_ready(self) -> None:
        await self._headers_done

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
            self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < READ_HIGH_WATER // 2 and self._transport:
            self._transport.resume_reading()
            self._paused = False
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self._error is None

    def recycle(self) -> None:
        if self._paused and self._transport is not None:
            self._transport.resume_reading()
        self._parser = httptools.HttpResponseParser(self)
        self.idle_since = time.monotonic()
        self._reset()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class Pool:
    """Idle keep-alive connections per (scheme, host, port)."""

    def __init__(self, keepalive_s: float = 30.0) -> None:
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._keepalive_s = keepalive_s
        self._ssl: ssl.SSLContext | None = None

    def take(self, target: Target) -> Connection | None:
        idle = self._idle.get(target.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._keepalive_s:
                return conn
            conn.close()
        return None

    async def connect(self, target: Target, timeout_s: float) -> Connection:
        scheme, host, port = target.key
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            self._ssl = self._ssl or ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop), host, port, ssl=context
                )
        except TimeoutError:
            log.warning("connecting to %s:%s timed out", host, port)
            raise UpstreamTimeout("connecting to the upstream provider timed out") from None
        except OSError as exc:
            log.warning("connecting to %s:%s failed: %s", host, port, exc)
            raise UpstreamError("could not connect to the upstream provider") from None
        return conn

    def give_back(self, target: Target, conn: Connection) -> None:
        if conn.reusable():
            conn.recycle()
            self._idle.setdefault(target.key, []).append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def exchange(
    pool: Pool, target: Target, head: bytes, body: bytes, timeout_s: float
) -> Connection:
    """Send a request; return the connection once the response headers arrived.

    A reused keep-alive connection that the server closed before answering is retried
    once on a fresh connection (the request never reached the application).
    """
    for attempt in (0, 1):
        conn = pool.take(target) if attempt == 0 else None
        reused = conn is not None
        if conn is None:
            conn = await pool.connect(target, timeout_s)
        try:
            conn.send(head, body)
            await conn.headers_ready()
            return conn
        except BaseException as exc:  # timeouts and cancellation too: never leak the socket
            conn.close()
            if not (isinstance(exc, UpstreamError) and reused and conn.received == 0):
                raise
    raise UpstreamError("upstream connection failed")  # pragma: no cover


async def body_chunks(conn: Connection) -> AsyncIterator[bytes]:
    while (chunk := await conn.next_chunk()) is not None:
        yield chunk
