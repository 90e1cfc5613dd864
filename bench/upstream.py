"""A fast mock OpenAI-compatible upstream: a raw asyncio.Protocol HTTP/1.1 keep-alive server.

Responses are built once per distinct request shape and cached as bytes, so serving a
request costs one head scan, one small JSON parse and one ``transport.write``.

Run alone with ``python -m bench.upstream [--port P]``; it prints the port it listens on.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from bench import http1, payloads
from bench.payloads import json_loads
from bench.procs import new_event_loop, pin_current_process, stop_process

MAX_HEAD = 64 * 1024
R = TypeVar("R")
JSON_HEAD = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)
REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found"}


@dataclass(frozen=True)
class UpstreamOptions:
    """How the mock behaves."""

    api_key: str | None = None
    stream_delay_ms: float = 0.0


def json_response(status: int, body: bytes, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return JSON_HEAD % (status, REASONS.get(status, b"Error"), len(body), extra) + body


def error_response(status: int, message: str, code: str) -> bytes:
    return json_response(status, payloads.error_body(message, code))


class Responder:
    """Maps a parsed request to response bytes, caching by request shape."""

    def __init__(self, options: UpstreamOptions) -> None:
        self._options = options
        self._auth = None
        if options.api_key:
            self._auth = b"bearer " + options.api_key.lower().encode()
        self._cache: dict[tuple[Any, ...], Any] = {}

    def authorized(self, lower_head: bytes) -> bool:
        if self._auth is None:
            return True
        return http1.header_value(lower_head, b"authorization") == self._auth

    def handle(self, method: bytes, path: bytes, body: bytes) -> bytes | list[bytes]:
        """Plain bytes for a complete response, a list of writes for a stream."""
        if method == b"GET":
            return self._get(path)
        if method != b"POST":
            return error_response(404, "not found", "not_found")
        try:
            doc = json_loads(body) if body else {}
        except ValueError:
            return error_response(400, "invalid JSON body", "invalid_json")
        if not isinstance(doc, dict):
            return error_response(400, "body must be a JSON object", "invalid_body")
        if path == b"/v1/chat/completions":
            return self._chat(doc)
        if path == b"/v1/embeddings":
            return self._embeddings(doc)
        return error_response(404, "not found", "not_found")

    def _get(self, path: bytes) -> bytes:
        if path in (b"/healthz", b"/health"):
            return json_response(200, b'{"status":"ok"}')
        if path == b"/v1/models":
            return self._cached(("models",), lambda: json_response(200, payloads.models_body()))
        return error_response(404, "not found", "not_found")

    def _chat(self, doc: dict[str, Any]) -> bytes | list[bytes]:
        model = str(doc.get("model") or "gpt-4o-mini")
        if not doc.get("stream"):
            return self._cached(("chat", model), lambda: json_response(200, payloads.chat(model)))
        options = doc.get("stream_options") or {}
        usage = bool(isinstance(options, dict) and options.get("include_usage"))
        return self._cached(("stream", model, usage), lambda: self._stream_writes(model, usage))

    def _stream_writes(self, model: str, usage: bool) -> list[bytes]:
        chunks = [http1.chunk(event) for event in payloads.stream_events(model, usage)]
        if self._options.stream_delay_ms <= 0:
            return [SSE_HEAD + chunks[0], b"".join(chunks[1:]) + http1.LAST_CHUNK]
        return [SSE_HEAD + chunks[0], *chunks[1:-1], chunks[-1] + http1.LAST_CHUNK]

    def _embeddings(self, doc: dict[str, Any]) -> bytes:
        model = str(doc.get("model") or "text-embedding-3-small")
        raw = doc.get("input", "")
        count = len(raw) if isinstance(raw, list) and raw and not isinstance(raw[0], int) else 1
        dims = doc.get("dimensions")
        dims = dims if isinstance(dims, int) and 0 < dims <= 4096 else 1536
        key = ("embed", model, count, dims)
        return self._cached(
            key, lambda: json_response(200, payloads.embeddings(model, count, dims))
        )

    def _cached(self, key: tuple[Any, ...], build: Callable[[], R]) -> R:
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = build()
        result: R = value
        return result


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; handles pipelined requests in order."""

    def __init__(self, responder: Responder, delay_s: float) -> None:
        self._responder = responder
        self._delay_s = delay_s
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None and self._next_request():
            pass

    def _next_request(self) -> bool:
        buf = self._buf
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buf) > MAX_HEAD:
                self._fail(400)
            return False
        lower = bytes(buf[:head_end]).lower()
        body_start = head_end + 4
        if http1.is_chunked(lower):
            parts: list[bytes] = []
            end, _ = http1.chunked_end(buf, body_start, parts)
            if end == http1.INCOMPLETE:
                return False
            body = b"".join(parts)
        else:
            end = body_start + max(http1.content_length(lower), 0)
            if len(buf) < end:
                return False
            body = bytes(buf[body_start:end])
        del buf[:end]
        self._respond(lower, body)
        return True

    def _respond(self, lower_head: bytes, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        line_end = lower_head.find(b"\r\n")
        method, _, rest = lower_head[: line_end if line_end >= 0 else None].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method != b"get" and not self._responder.authorized(lower_head):
            out: bytes | list[bytes] = error_response(401, "bad upstream key", "invalid_api_key")
        else:
            out = self._responder.handle(method.upper(), path, body)
        close = http1.header_value(lower_head, b"connection") == b"close"
        self._write(out, close)

    def _write(self, out: bytes | list[bytes], close: bool) -> None:
        transport = self._transport
        assert transport is not None
        if isinstance(out, bytes):
            transport.write(out)
        elif self._delay_s <= 0 or len(out) == 1:
            for part in out:
                transport.write(part)
        else:
            transport.write(out[0])
            self._schedule(out, 1, close)
            return
        if close:
            transport.close()

    def _schedule(self, parts: list[bytes], index: int, close: bool) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self._delay_s, self._write_later, parts, index, close)

    def _write_later(self, parts: list[bytes], index: int, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(parts[index])
        if index + 1 < len(parts):
            self._schedule(parts, index + 1, close)
        elif close:
            transport.close()

    def _fail(self, status: int) -> None:
        assert self._transport is not None
        self._transport.write(error_response(status, "bad request", "bad_request"))
        self._transport.close()


async def start_server(
    host: str, port: int, options: UpstreamOptions
) -> tuple[asyncio.Server, int]:
    responder = Responder(options)
    delay_s = options.stream_delay_ms / 1000.0
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(responder, delay_s), host, port, backlog=2048
    )
    return server, int(server.sockets[0].getsockname()[1])


def serve(
    host: str,
    port: int,
    options: UpstreamOptions,
    cpus: set[int] | None,
    report: multiprocessing.connection.Connection | None,
) -> None:
    """Process body: bind, report the port, then serve until terminated."""
    if report is not None:  # a child of the harness: the parent stops it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin_current_process(cpus)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    _server, bound = loop.run_until_complete(start_server(host, port, options))
    if report is not None:
        report.send(bound)
        report.close()
    else:
        print(f"mock upstream listening on http://{host}:{bound}/v1", flush=True)
    loop.run_forever()


class Upstream:
    """The mock upstream running in its own process."""

    def __init__(self, options: UpstreamOptions, cpus: set[int] | None = None) -> None:
        self._options = options
        self._cpus = cpus
        self._process: multiprocessing.process.BaseProcess | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 15.0) -> Upstream:
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        args = ("127.0.0.1", 0, self._options, self._cpus, sender)
        self._process = ctx.Process(target=serve, args=args, name="bench-upstream", daemon=True)
        self._process.start()
        sender.close()
        if not receiver.poll(timeout_s):
            raise RuntimeError("mock upstream did not report its port in time")
        try:
            self.port = int(receiver.recv())
        except EOFError:
            raise RuntimeError("mock upstream exited before listening") from None
        finally:
            receiver.close()
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this upstream bearer key")
    parser.add_argument("--stream-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    options = UpstreamOptions(api_key=args.api_key, stream_delay_ms=args.stream_delay_ms)
    serve("127.0.0.1", args.port, options, None, None)


if __name__ == "__main__":
    main()
