"""The soak's HTTP/1.1 client: asyncio streams, every exchange bounded in time.

Unlike ``bench/load.py`` (one pre-built request, as fast as possible), the soak sends many
different requests at a modest rate, and some on purpose badly: a stream it walks away from
after the first event, a body larger than the gateway accepts, bytes that are not JSON. A
``Connection`` keeps its socket alive between well-formed requests and opens a fresh one
after anything that leaves the connection in doubt.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

BODY_CAP = 256 * 1024  # bytes of a response body kept for checks; the rest is read and dropped
MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Request:
    """One request. ``stream``: ``"none"``, ``"full"`` (read to the end) or ``"abandon"``
    (close the connection after the first event)."""

    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    stream: str = "none"
    fresh: bool = False  # send on a new connection and close it afterwards

    def encode(self, host: str, port: int, keep_alive: bool) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}:{port}"]
        lines.append("Connection: " + ("keep-alive" if keep_alive else "close"))
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if self.body is not None:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (self.body or b"")


@dataclass
class Reply:
    """What came back. ``status`` 0: no response head (see ``error``)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None  # "timeout", "reset", "closed"
    abandoned: bool = False

    @property
    def outcome(self) -> str:
        """The key it is counted under: the status, or the error when there was none."""
        return str(self.status) if self.status else (self.error or "no-answer")


class _Abandon(Exception):
    """Raised inside a read to walk away from a stream."""


class Connection:
    """One client connection to a loopback server, reopened when needed."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: Request, timeout_s: float) -> Reply:
        """Send ``request`` and read its answer; never raises for network trouble."""
        reused = self._writer is not None and not request.fresh
        reply = await self._attempt(request, timeout_s)
        if reused and reply.status == 0 and reply.error in ("closed", "reset"):
            # the server closed an idle keep-alive connection before reading this request
            reply = await self._attempt(request, timeout_s)
        return reply

    async def _attempt(self, request: Request, timeout_s: float) -> Reply:
        reply = Reply()
        keep = False
        try:
            async with asyncio.timeout(timeout_s):
                keep = await self._exchange(request, reply)
        except TimeoutError:
            reply.error = "timeout"
        except _Abandon:
            reply.abandoned = True
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
            reply.error = "closed" if isinstance(err, asyncio.IncompleteReadError) else "reset"
        except (OSError, ValueError) as err:
            reply.error = type(err).__name__
        if not keep:
            await self.close()
        return reply

    async def _exchange(self, request: Request, reply: Reply) -> bool:
        if request.fresh:
            await self.close()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=MAX_HEAD
            )
        assert self._reader is not None
        keep_alive = not request.fresh and request.stream != "abandon"
        self._writer.write(request.encode(self.host, self.port, keep_alive))
        try:
            await self._writer.drain()
        except ConnectionError:
            pass  # refused part-way (a body over the limit): the answer may still be readable
        await _read_head(self._reader, reply)
        await _read_body(self._reader, reply, request.stream == "abandon")
        return keep_alive and reply.headers.get("connection", "") != "close"

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader, reply: Reply) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    reply.status = int(parts[1])
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            reply.headers[name.strip().lower()] = value.strip()


async def _read_body(reader: asyncio.StreamReader, reply: Reply, abandon: bool) -> None:
    kept = bytearray()
    if "chunked" in reply.headers.get("transfer-encoding", "").lower():
        await _read_chunked(reader, kept, abandon)
    elif "content-length" in reply.headers:
        remaining = int(reply.headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise asyncio.IncompleteReadError(bytes(kept), remaining)
            remaining -= len(data)
            _keep(kept, data)
    else:
        while data := await reader.read(65536):
            _keep(kept, data)
    reply.body = bytes(kept)


async def _read_chunked(reader: asyncio.StreamReader, kept: bytearray, abandon: bool) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return
        data = await reader.readexactly(size + 2)
        _keep(kept, data[:-2])
        if abandon:
            raise _Abandon()


def _keep(kept: bytearray, data: bytes) -> None:
    room = BODY_CAP - len(kept)
    if room > 0:
        kept += data[:room]
