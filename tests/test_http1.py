"""The keep-alive HTTP/1.1 client transport, driven against a byte-exact scripted server.

Every test runs a raw ``asyncio.start_server`` on 127.0.0.1 whose handler writes exactly
the bytes the test scripts, so connection reuse (accept counts), framing and failures are
observed on the wire rather than through another HTTP library.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from farebox.errors import UpstreamError, UpstreamTimeout
from farebox.http import http1
from farebox.http.client import HttpClient, SseEvent
from farebox.http.http1 import Target

PATH = "/v1/chat/completions"
GUARD_S = 5.0  # an upper bound on any one wait, so a broken client fails instead of hanging


# --------------------------------------------------------------------------------------
# the scripted server
# --------------------------------------------------------------------------------------


@dataclass
class Request:
    """One request as the server read it off the wire."""

    conn: int
    line: bytes
    headers: list[tuple[bytes, bytes]]
    head: bytes
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]


@dataclass
class Peer:
    """One accepted connection; the handler scripts its bytes."""

    server: ScriptedServer
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self) -> Request | None:
        """The next request on this connection, or None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            assert exc.partial == b"", f"client sent a truncated head: {exc.partial!r}"
            self.closed_by_client.set()
            return None
        except ConnectionError:
            self.closed_by_client.set()
            return None
        line, *lines = head[:-4].split(b"\r\n")
        headers = []
        for raw in lines:
            name, _, value = raw.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        lengths = [value for name, value in headers if name == b"content-length"]
        body = await self.reader.readexactly(int(lengths[0])) if lengths else b""
        request = Request(self.index, line, headers, head, body)
        self.server.requests.append(request)
        self.server.arrivals.put_nowait(request)
        return request

    async def wait_client_close(self) -> None:
        """Read until the client closes its end; fail on any unexpected byte."""
        try:
            data = await self.reader.read(1)
        except ConnectionError:
            data = b""
        assert data == b"", f"client sent unexpected bytes: {data!r}"
        self.closed_by_client.set()

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


Handler = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.peers: list[Peer] = []
        self.requests: list[Request] = []
        self.arrivals: asyncio.Queue[Request] = asyncio.Queue()
        self.errors: list[BaseException] = []
        self.port = 0

    @property
    def accepts(self) -> int:
        return len(self.peers)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def on_conn(self, index: int) -> list[Request]:
        return [request for request in self.requests if request.conn == index]

    async def start(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, len(self.peers), reader, writer)
        self.peers.append(peer)
        try:
            await self._handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-script: the test asserts what it expects
        except Exception as exc:  # a broken script: surfaced when the server closes
            self.errors.append(exc)
        finally:
            await peer.close()

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.close()  # a handler still reading sees the end of its stream
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=GUARD_S)
            for task in pending:  # a handler stuck on a script event
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        if self.errors:
            raise self.errors[0]


def response(
    body: bytes = b"",
    *,
    status: bytes = b"200 OK",
    headers: Iterable[tuple[str, str]] = (),
    length: bool = True,
) -> bytes:
    lines = [b"HTTP/1.1 " + status]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    if length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*parts: bytes) -> bytes:
    out = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in parts)
    return out + b"0\r\n\r\n"


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def echo(request: Request) -> bytes:
    return response(b"echo:" + request.body, headers=[("Content-Type", "application/json")])


async def serve_each(peer: Peer, respond: Callable[[Request], bytes] = echo) -> None:
    """A plain keep-alive server: answer every request on this connection."""
    while (request := await peer.request()) is not None:
        await peer.send(respond(request))


class FeedLog:
    """Every piece of bytes the client's parser was fed, to pace the server by the client.

    Waiting until the client has consumed one piece before writing the next makes each
    write arrive as its own ``data_received`` call, so a split is a real split.
    """

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.total = 0
        self._grew = asyncio.Event()

    def add(self, data: bytes) -> None:
        self.pieces.append(data)
        self.total += len(data)
        self._grew.set()

    async def reach(self, total: int) -> None:
        async with asyncio.timeout(GUARD_S):
            while self.total < total:
                self._grew.clear()
                await self._grew.wait()


async def write_paced(peer: Peer, pieces: Sequence[bytes], feed: FeedLog) -> None:
    for piece in pieces:
        target = feed.total + len(piece)
        peer.write(piece)
        await feed.reach(target)


def split_at(data: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(handler: Handler) -> ScriptedServer:
        server = await ScriptedServer(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.aclose()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.aclose()


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> FeedLog:
    log = FeedLog()
    original = http1.Connection.data_received

    def data_received(self: http1.Connection, data: bytes) -> None:
        log.add(data)
        original(self, data)

    monkeypatch.setattr(http1.Connection, "data_received", data_received)
    return log


Serve = Callable[[Handler], Awaitable[ScriptedServer]]


async def post(client: HttpClient, url: str, body: bytes = b"{}", timeout_s: float = GUARD_S):
    return await client.post_json(url, {"content-type": "application/json"}, body, timeout_s)


# --------------------------------------------------------------------------------------
# 1. keep-alive reuse
# --------------------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(serve: Serve, client: HttpClient) -> None:
    server = await serve(serve_each)
    for i in range(5):
        result = await post(client, server.url, f'{{"n":{i}}}'.encode())
        assert result.status == 200
        assert result.body == f'echo:{{"n":{i}}}'.encode()
    assert server.accepts == 1
    assert [request.conn for request in server.requests] == [0] * 5


async def test_concurrent_requests_open_connections_then_reuse_them(
    serve: Serve, client: HttpClient
) -> None:
    # the first three requests are held until all three arrived: that only happens if the
    # client opened one connection per concurrent request
    all_arrived = asyncio.Event()

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if len(server.requests) == 3:
                all_arrived.set()
            await all_arrived.wait()
            await peer.send(echo(request))

    server = await serve(handler)
    async with asyncio.timeout(GUARD_S):
        first = await asyncio.gather(*(post(client, server.url, b"%d" % i) for i in range(3)))
    assert [r.body for r in first] == [b"echo:0", b"echo:1", b"echo:2"]
    assert server.accepts == 3

    async with asyncio.timeout(GUARD_S):
        second = await asyncio.gather(*(post(client, server.url, b"%d" % i) for i in range(3)))
    assert [r.body for r in second] == [b"echo:0", b"echo:1", b"echo:2"]
    assert server.accepts == 3  # no new connection: the three idle ones were reused
    assert sorted(request.conn for request in server.requests[3:]) == [0, 1, 2]


async def test_different_ports_do_not_share_connections(serve: Serve, client: HttpClient) -> None:
    one, two = await serve(serve_each), await serve(serve_each)
    for _ in range(2):
        assert (await post(client, one.url, b"a")).body == b"echo:a"
        assert (await post(client, two.url, b"b")).body == b"echo:b"
    assert (one.accepts, two.accepts) == (1, 1)
    assert [r.body for r in one.requests] == [b"a", b"a"]
    assert [r.body for r in two.requests] == [b"b", b"b"]


# --------------------------------------------------------------------------------------
# 2. Connection: close
# --------------------------------------------------------------------------------------


async def test_connection_close_response_is_not_reused(serve: Serve, client: HttpClient) -> None:
    # the server says "close" but leaves its end open: the client itself must drop it
    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        await peer.send(response(b"bye" + request.body, headers=[("Connection", "close")]))
        await peer.wait_client_close()

    server = await serve(handler)
    first = await post(client, server.url, b"1")
    assert (first.status, first.body) == (200, b"bye1")
    async with asyncio.timeout(GUARD_S):
        await server.peers[0].closed_by_client.wait()
    second = await post(client, server.url, b"2")
    assert (second.status, second.body) == (200, b"bye2")
    assert server.accepts == 2
    assert [len(server.on_conn(0)), len(server.on_conn(1))] == [1, 1]


async def test_server_closing_after_connection_close_then_new_connection(
    serve: Serve, client: HttpClient
) -> None:
    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        await peer.send(response(b"echo:" + request.body, headers=[("Connection", "close")]))
        # and the server closes its end

    server = await serve(handler)
    for i in range(3):
        assert (await post(client, server.url, b"%d" % i)).body == b"echo:%d" % i
    assert server.accepts == 3


# --------------------------------------------------------------------------------------
# 3. stale keep-alive connections
# --------------------------------------------------------------------------------------


async def test_idle_connection_closed_by_server_is_replaced(
    serve: Serve, client: HttpClient
) -> None:
    # the server answers with keep-alive and then silently closes that connection
    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        await peer.send(echo(request))
        if peer.index == 0:
            await peer.close()
            done.set()
        else:
            await serve_each(peer)

    done = asyncio.Event()
    server = await serve(handler)
    assert (await post(client, server.url, b"1")).body == b"echo:1"
    async with asyncio.timeout(GUARD_S):
        await done.wait()
    second = await post(client, server.url, b"2")
    assert (second.status, second.body) == (200, b"echo:2")
    assert server.accepts == 2
    assert [r.body for r in server.on_conn(1)] == [b"2"]


async def test_stale_connection_is_retried_once_on_a_fresh_one(
    serve: Serve, client: HttpClient
) -> None:
    # connection 0 answers the first request, then drops the second unanswered: the
    # request never reached the application, so the client resends it on a new connection
    async def handler(peer: Peer) -> None:
        if peer.index == 0:
            request = await peer.request()
            assert request is not None
            await peer.send(echo(request))
            assert await peer.request() is not None
            return  # closes without answering
        await serve_each(peer)

    server = await serve(handler)
    assert (await post(client, server.url, b"first")).body == b"echo:first"
    result = await post(client, server.url, b"second")
    assert (result.status, result.body) == (200, b"echo:second")
    assert server.accepts == 2
    assert [r.body for r in server.on_conn(0)] == [b"first", b"second"]  # one failed attempt
    assert [r.body for r in server.on_conn(1)] == [b"second"]
    # and the replacement connection is pooled in turn
    assert (await post(client, server.url, b"third")).body == b"echo:third"
    assert server.accepts == 2


async def test_fresh_connection_dropped_unanswered_is_not_retried(
    serve: Serve, client: HttpClient
) -> None:
    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None  # then close without answering

    server = await serve(handler)
    with pytest.raises(UpstreamError) as caught:
        await post(client, server.url)
    assert type(caught.value) is UpstreamError
    assert caught.value.upstream_status == 0
    assert server.accepts == 1
    assert len(server.requests) == 1


async def test_reused_connection_failing_after_partial_answer_is_not_retried(
    serve: Serve, client: HttpClient
) -> None:
    # bytes of a response arrived: the upstream saw the request, so resending is unsafe
    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        await peer.send(echo(request))
        assert await peer.request() is not None
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Ty")

    server = await serve(handler)
    assert (await post(client, server.url, b"1")).body == b"echo:1"
    with pytest.raises(UpstreamError):
        await post(client, server.url, b"2")
    assert server.accepts == 1
    assert [r.body for r in server.requests] == [b"1", b"2"]


# --------------------------------------------------------------------------------------
# 4. response bodies
# --------------------------------------------------------------------------------------


async def test_content_length_body(serve: Serve, client: HttpClient) -> None:
    async def handler(peer: Peer) -> None:
        await serve_each(peer, lambda _: response(b'{"ok":true}', status=b"201 Created"))

    server = await serve(handler)
    result = await post(client, server.url)
    assert result.status == 201
    assert result.body == b'{"ok":true}'
    assert result.headers["content-length"] == "11"


async def test_chunked_body_split_across_many_writes(
    serve: Serve, client: HttpClient, feed: FeedLog
) -> None:
    body = chunked(b"hello", b" ", b"x" * 26, b"world")  # a 0x1a chunk: two-digit size line
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Trace: abc\r\n\r\n" + body
    head_len = wire.index(b"\r\n\r\n") + 4
    size_line = wire.index(b"1a\r\n")
    cuts = [
        5,  # mid status line
        wire.index(b"Encoding"),  # mid header name
        wire.index(b"abc") + 1,  # mid header value
        head_len - 2,  # between the head's two CRLFs
        head_len + 3,  # mid body of the first chunk ("hel|lo")
        head_len + 8,  # inside the CRLF ending the first chunk
        size_line + 1,  # mid chunk-size line ("1|a")
        size_line + 10,  # mid chunk data
        len(wire) - 3,  # mid final zero chunk
    ]
    pieces = split_at(wire, *cuts)
    assert b"".join(pieces) == wire

    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None
        await write_paced(peer, pieces, feed)
        await serve_each(peer)

    server = await serve(handler)
    result = await post(client, server.url)
    assert result.status == 200
    assert result.body == b"hello " + b"x" * 26 + b"world"
    assert result.headers["x-trace"] == "abc"
    assert feed.pieces[: len(pieces)] == pieces  # each write was its own read
    # a completed chunked response leaves the connection reusable
    assert (await post(client, server.url, b"2")).body == b"echo:2"
    assert server.accepts == 1


async def test_body_read_until_close(serve: Serve, client: HttpClient, feed: FeedLog) -> None:
    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None
        head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n"
        await write_paced(peer, [head, b"part one, ", b"part two"], feed)

    server = await serve(handler)
    result = await post(client, server.url)
    assert result.status == 200
    assert result.body == b"part one, part two"
    assert "content-length" not in result.headers
    second = await post(client, server.url)
    assert second.body == b"part one, part two"
    assert server.accepts == 2


async def test_http10_response_without_length_reads_until_close(
    serve: Serve, client: HttpClient
) -> None:
    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None
        await peer.send(b"HTTP/1.0 200 OK\r\n\r\nold style body")

    server = await serve(handler)
    result = await post(client, server.url)
    assert (result.status, result.body) == (200, b"old style body")


async def test_204_has_empty_body_and_keeps_the_connection(
    serve: Serve, client: HttpClient
) -> None:
    async def handler(peer: Peer) -> None:
        await serve_each(peer, lambda _: b"HTTP/1.1 204 No Content\r\nX-Id: 7\r\n\r\n")

    server = await serve(handler)
    async with asyncio.timeout(GUARD_S):
        for _ in range(3):
            result = await post(client, server.url)
            assert (result.status, result.body, result.headers["x-id"]) == (204, b"", "7")
    assert server.accepts == 1


async def test_headers_are_lower_cased_and_repeats_joined(serve: Serve, client: HttpClient) -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("X-RateLimit-Remaining", "41"),
        ("Set-Cookie", "a=1"),
        ("X-Dup", "one"),
        ("set-cookie", "b=2"),
        ("x-DUP", "two"),
        ("X-Dup", "three"),
        ("Retry-After", "  2"),
    ]

    async def handler(peer: Peer) -> None:
        await serve_each(peer, lambda _: response(b"{}", headers=headers))

    server = await serve(handler)
    result = await post(client, server.url)
    assert dict(result.headers) == {
        "content-type": "application/json",
        "x-ratelimit-remaining": "41",
        "set-cookie": "a=1, b=2",
        "x-dup": "one, two, three",
        "retry-after": "2",
        "content-length": "2",
    }


async def test_header_value_excludes_trailing_whitespace(serve: Serve, client: HttpClient) -> None:
    # RFC 9110 5.5: a field value does not include leading or trailing whitespace
    async def handler(peer: Peer) -> None:
        await serve_each(peer, lambda _: response(b"{}", headers=[("Retry-After", "2 \t ")]))

    server = await serve(handler)
    result = await post(client, server.url)
    assert result.headers["retry-after"] == "2"


# --------------------------------------------------------------------------------------
# 5. streams
# --------------------------------------------------------------------------------------

SSE_PAYLOAD = (
    b'data: {"id":1}\n\n'
    b"event: ping\r\ndata: x\r\n\r\n"
    b": a comment line\n"
    b"data: line one\ndata: line two\n\n"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)
SSE_EVENTS = [
    SseEvent("", b'{"id":1}'),
    SseEvent("ping", b"x"),
    SseEvent("", b"line one\nline two"),
    SseEvent("", b"no-space"),
    SseEvent("", b"[DONE]"),
]


async def test_stream_events_across_byte_by_byte_writes(
    serve: Serve, client: HttpClient, feed: FeedLog
) -> None:
    wire = CHUNKED_HEAD + chunked(SSE_PAYLOAD[:20], SSE_PAYLOAD[20:61], SSE_PAYLOAD[61:])

    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None
        await write_paced(peer, [wire[i : i + 1] for i in range(len(wire))], feed)
        await serve_each(peer)

    server = await serve(handler)
    async with client.stream(server.url, {}, b"{}", GUARD_S) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        events = [event async for event in stream.events()]
    assert events == SSE_EVENTS
    assert len(feed.pieces) >= len(wire)  # really fed one byte at a time
    # a fully read stream returns its connection to the pool
    assert (await post(client, server.url, b"z")).body == b"echo:z"
    assert server.accepts == 1


async def test_stream_chunks_and_read(serve: Serve, client: HttpClient) -> None:
    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(CHUNKED_HEAD + chunked(b"ab", b"cd", b"ef"))

    server = await serve(handler)
    async with client.stream(server.url, {}, b"{}", GUARD_S) as stream:
        got = b"".join([chunk async for chunk in stream.chunks()])
    assert got == b"abcdef"
    async with client.stream(server.url, {}, b"{}", GUARD_S) as stream:
        assert await stream.read() == b"abcdef"
    assert server.accepts == 1


async def test_leaving_a_stream_early_closes_its_connection(
    serve: Serve, client: HttpClient
) -> None:
    async def handler(peer: Peer) -> None:
        if peer.index > 0:
            await serve_each(peer)
            return
        assert await peer.request() is not None
        frames = b'data: {"n":1}\n\n', b'data: {"n":2}\n\n'
        await peer.send(CHUNKED_HEAD + b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames))
        await peer.wait_client_close()  # the response is never finished

    server = await serve(handler)
    async with client.stream(server.url, {}, b"{}", GUARD_S) as stream:
        async with contextlib.aclosing(stream.events()) as events:
            async for event in events:
                assert event == SseEvent("", b'{"n":1}')
                break
    async with asyncio.timeout(GUARD_S):
        await server.peers[0].closed_by_client.wait()
    result = await post(client, server.url, b"next")
    assert result.body == b"echo:next"
    assert server.accepts == 2  # the half-read connection was not pooled


# --------------------------------------------------------------------------------------
# 6. errors
# --------------------------------------------------------------------------------------


async def test_connection_refused(client: HttpClient) -> None:
    # a bound socket that does not listen refuses connections, and holds the port meanwhile
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(UpstreamError) as caught:
            await post(client, f"http://127.0.0.1:{port}{PATH}")
    assert type(caught.value) is UpstreamError
    assert caught.value.upstream_status == 0
    assert caught.value.retryable


@pytest.mark.parametrize(
    "wire",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbody\r\n",
    ],
    ids=["not-http", "bad-status", "bad-length", "bad-chunk-size"],
)
async def test_malformed_response_is_upstream_error(
    serve: Serve, client: HttpClient, wire: bytes
) -> None:
    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None
        await peer.send(wire)
        await peer.wait_client_close()  # the client must drop the broken connection

    server = await serve(handler)
    with pytest.raises(UpstreamError) as caught:
        await post(client, server.url)
    assert type(caught.value) is UpstreamError
    async with asyncio.timeout(GUARD_S):
        await server.peers[0].closed_by_client.wait()


@pytest.mark.parametrize(
    "wire",
    [
        response(b"x" * 100)[:-90],
        CHUNKED_HEAD + b"a\r\n01234",
        CHUNKED_HEAD + b"5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked-mid-chunk", "chunked-no-terminator"],
)
async def test_server_closing_mid_body_is_upstream_error(
    serve: Serve, client: HttpClient, wire: bytes
) -> None:
    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None
        await peer.send(wire)  # then close

    server = await serve(handler)
    with pytest.raises(UpstreamError) as caught:
        await post(client, server.url)
    assert type(caught.value) is UpstreamError
    assert "closed" in str(caught.value)
    assert server.accepts == 1


async def test_no_response_within_timeout(serve: Serve, client: HttpClient) -> None:
    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None
        await peer.wait_client_close()

    server = await serve(handler)
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await post(client, server.url, timeout_s=0.2)
    assert 0.15 < time.monotonic() - start < 2.0
    assert len(server.requests) == 1


async def test_timed_out_request_closes_its_connection(serve: Serve, client: HttpClient) -> None:
    # a connection given up on must be closed, not left open until the upstream hangs up
    async def handler(peer: Peer) -> None:
        if peer.index > 0:
            await serve_each(peer)
            return
        assert await peer.request() is not None
        await peer.wait_client_close()

    server = await serve(handler)
    with pytest.raises(UpstreamTimeout):
        await post(client, server.url, timeout_s=0.2)
    try:
        async with asyncio.timeout(1.0):
            await server.peers[0].closed_by_client.wait()
    except TimeoutError:
        pytest.fail("the timed-out connection was left open")
    assert (await post(client, server.url, b"after")).body == b"echo:after"
    assert server.accepts == 2


async def test_body_stalling_past_the_deadline_times_out(serve: Serve, client: HttpClient) -> None:
    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(response(b"x" * 100)[:-60])  # head and 40 of 100 bytes
            await peer.wait_client_close()

    server = await serve(handler)
    async with asyncio.timeout(GUARD_S):
        with pytest.raises(UpstreamTimeout):
            await post(client, server.url, timeout_s=0.2)

    async with asyncio.timeout(GUARD_S), client.stream(server.url, {}, b"{}", 0.2) as stream:
        assert stream.status == 200  # the head arrived: the timeout comes from the read
        with pytest.raises(UpstreamTimeout):
            await stream.read()
    assert server.accepts == 2


async def test_sse_stream_stalling_past_the_deadline_times_out(
    serve: Serve, client: HttpClient
) -> None:
    async def handler(peer: Peer) -> None:
        assert await peer.request() is not None
        await peer.send(CHUNKED_HEAD + b'f\r\ndata: {"a":1}\n\n\r\n')
        await peer.wait_client_close()

    server = await serve(handler)
    got: list[SseEvent] = []
    async with asyncio.timeout(GUARD_S), client.stream(server.url, {}, b"{}", 0.2) as stream:
        with pytest.raises(UpstreamTimeout):
            async for event in stream.events():
                got.append(event)
    assert got == [SseEvent("", b'{"a":1}')]


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer sk\r\nX-Injected: 1"},
        {"x-key": "line\nbreak"},
        {"x-key": "carriage\rreturn"},
        {"x-evil\r\nx-injected": "1"},
    ],
)
async def test_header_with_line_break_is_rejected_before_sending(
    serve: Serve, client: HttpClient, headers: dict[str, str]
) -> None:
    server = await serve(serve_each)
    with pytest.raises(UpstreamError) as caught:
        await client.post_json(server.url, headers, b"{}", GUARD_S)
    assert "invalid characters" in str(caught.value)
    assert server.accepts == 0
    assert server.requests == []
    # the client is still usable
    assert (await post(client, server.url, b"ok")).body == b"echo:ok"


async def test_header_value_outside_latin1_is_upstream_error(
    serve: Serve, client: HttpClient
) -> None:
    server = await serve(serve_each)
    with pytest.raises(UpstreamError):
        await client.post_json(server.url, {"x-api-key": "sk-€"}, b"{}", GUARD_S)
    assert server.accepts == 0


# --------------------------------------------------------------------------------------
# 7. request bytes
# --------------------------------------------------------------------------------------


async def test_request_bytes_on_the_wire(serve: Serve, client: HttpClient) -> None:
    server = await serve(serve_each)
    body = '{"model":"gpt-4.1","messages":[{"role":"user","content":"héllo ✓"}]}'.encode()
    headers = {"Authorization": "Bearer sk-upstream", "Content-Type": "application/json"}
    await client.post_json(server.url, headers, body, GUARD_S)
    (request,) = server.requests
    assert request.line == b"POST /v1/chat/completions HTTP/1.1"
    assert request.header(b"host") == [f"127.0.0.1:{server.port}".encode()]
    assert request.header(b"authorization") == [b"Bearer sk-upstream"]
    assert request.header(b"content-type") == [b"application/json"]
    assert request.header(b"content-length") == [str(len(body)).encode()]
    assert len(body) != len(body.decode())  # the length counts bytes, not characters
    assert request.body == body
    assert sorted(name for name, _ in request.headers) == [
        b"authorization",
        b"content-length",
        b"content-type",
        b"host",
    ]
    assert request.head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: ")


async def test_request_with_query_and_empty_body(serve: Serve, client: HttpClient) -> None:
    server = await serve(serve_each)
    url = f"http://127.0.0.1:{server.port}/openai/deployments/x/chat?api-version=2024-10-21"
    result = await client.post_json(url, {}, b"", GUARD_S)
    assert result.body == b"echo:"
    (request,) = server.requests
    assert request.line == b"POST /openai/deployments/x/chat?api-version=2024-10-21 HTTP/1.1"
    assert request.header(b"content-length") == [b"0"]
    assert request.body == b""


def test_target_parse_https_defaults() -> None:
    target = Target.parse("https://api.openai.com/v1/chat/completions")
    assert target.key == ("https", "api.openai.com", 443)
    assert target.host_header == b"api.openai.com"
    assert target.path == b"/v1/chat/completions"


@pytest.mark.parametrize(
    ("url", "key", "host", "path"),
    [
        ("http://localhost/", ("http", "localhost", 80), b"localhost", b"/"),
        ("http://example.com", ("http", "example.com", 80), b"example.com", b"/"),
        ("https://example.com:8443/a", ("https", "example.com", 8443), b"example.com:8443", b"/a"),
        ("http://example.com:443/a", ("http", "example.com", 443), b"example.com:443", b"/a"),
        ("https://example.com:80/a", ("https", "example.com", 80), b"example.com:80", b"/a"),
        (
            "HTTPS://Example.COM/x?y=1#frag",
            ("https", "example.com", 443),
            b"example.com",
            b"/x?y=1",
        ),
    ],
)
def test_target_parse(url: str, key: tuple[str, str, int], host: bytes, path: bytes) -> None:
    target = Target.parse(url)
    assert (target.key, target.host_header, target.path) == (key, host, path)


@pytest.mark.parametrize(
    ("url", "host"),
    [("http://[::1]:8080/v1", b"[::1]:8080"), ("https://[2001:db8::1]/v1", b"[2001:db8::1]")],
)
def test_target_parse_ipv6_literal_keeps_brackets_in_host_header(url: str, host: bytes) -> None:
    # RFC 9110 7.2 / RFC 3986 3.2.2: an IPv6 literal in Host is written in brackets
    target = Target.parse(url)
    assert target.key[1] == host.split(b"]")[0].lstrip(b"[").decode()
    assert target.host_header == host


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "example.com/v1",
        "http:///v1",
        "unix:/x",
        "http://example.com:99999/v1",
        "http://example.com:abc/v1",
    ],
)
def test_target_parse_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(UpstreamError):
        Target.parse(url)


# --------------------------------------------------------------------------------------
# 8. back-pressure
# --------------------------------------------------------------------------------------

BIG = bytes(range(256)) * (5 * 1024 * 1024 // 256 + 3)  # just over 5 MB, position-dependent


async def test_large_body_is_read_completely(serve: Serve, client: HttpClient) -> None:
    async def handler(peer: Peer) -> None:
        await serve_each(peer, lambda r: response(BIG) if r.body == b"big" else echo(r))

    server = await serve(handler)
    result = await post(client, server.url, b"big")
    assert len(result.body) == len(BIG)
    assert result.body == BIG
    # the connection survived the pause/resume cycle and is reused
    assert (await post(client, server.url, b"small")).body == b"echo:small"
    assert server.accepts == 1


async def test_large_chunked_stream_read_incrementally(serve: Serve, client: HttpClient) -> None:
    parts = [BIG[i : i + 300_000] for i in range(0, len(BIG), 300_000)]

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.body == b"big":
                await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                await peer.send(chunked(*parts))
            else:
                await peer.send(echo(request))

    server = await serve(handler)
    received = bytearray()
    async with client.stream(server.url, {}, b"big", GUARD_S) as stream:
        async for chunk in stream.chunks():
            received += chunk
    assert bytes(received) == BIG
    assert (await post(client, server.url, b"small")).body == b"echo:small"
    assert server.accepts == 1


async def test_lagging_reader_pauses_the_socket_then_reads_everything(
    serve: Serve, client: HttpClient, feed: FeedLog
) -> None:
    high_water = http1.READ_HIGH_WATER

    async def handler(peer: Peer) -> None:
        await serve_each(peer, lambda r: response(BIG) if r.body == b"big" else echo(r))

    server = await serve(handler)
    async with client.stream(server.url, {}, b"big", GUARD_S) as stream:
        # nobody reads the body yet: the client stops reading the socket past high water
        await feed.reach(high_water + 1)
        assert feed.total < 2 * high_water
        assert stream.status == 200
        body = await stream.read()  # reading drains the buffer and resumes the socket
    assert body == BIG
    assert feed.total > len(BIG)
    assert (await post(client, server.url, b"small")).body == b"echo:small"
    assert server.accepts == 1


async def test_unread_complete_body_over_high_water_does_not_poison_the_pool(
    serve: Serve, client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A whole response arrives in one read and crosses the high-water mark, so reading is
    # paused; the caller leaves the stream without reading the body. The response was
    # complete, so the connection is pooled -- it must then still be able to read.
    monkeypatch.setattr(http1, "READ_HIGH_WATER", 16)

    async def handler(peer: Peer) -> None:
        await serve_each(peer, lambda r: response(b"y" * 64) if r.body == b"big" else echo(r))

    server = await serve(handler)
    async with client.stream(server.url, {}, b"big", GUARD_S) as stream:
        assert stream.status == 200
    result = await post(client, server.url, b"after", timeout_s=1.0)
    assert result.body == b"echo:after"
