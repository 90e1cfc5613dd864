"""In-process fake upstreams: real aiohttp servers on 127.0.0.1, scripted per test.

Shared machinery: :class:`Reply` (one scripted answer), :class:`Recorded` (one received
request) and :class:`FakeUpstream` (server, reply queue, request log). The concrete fakes are
``fakes.openai_upstream.OpenAIUpstream`` and ``fakes.anthropic_upstream.AnthropicUpstream``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web
from multidict import CIMultiDict

GATE_TIMEOUT_S = 10.0


@dataclass
class Reply:
    """One scripted answer.

    ``frames`` makes it a streamed (``text/event-stream``) answer written frame by frame.
    ``disconnect_after`` drops the connection (no clean end of body) after that many frames.
    ``hold`` keeps a streamed answer open after its frames until the fake is closed.
    ``gate`` holds the answer back until the event is set (or ``GATE_TIMEOUT_S`` passed, so a
    failing test cannot hang): a test can keep requests in flight upstream, then let them go.
    """

    status: int = 200
    body: Any = None  # a JSON-able object, or raw bytes
    headers: dict[str, str] = field(default_factory=dict)
    frames: list[bytes] | None = None
    disconnect_after: int | None = None
    hold: bool = False
    gate: asyncio.Event | None = None


@dataclass
class Recorded:
    method: str
    path: str
    headers: CIMultiDict[str]
    raw: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw) if self.raw else None


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Start ``app`` on a free loopback port: its runner (``cleanup()`` stops it) and the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


class FakeUpstream:
    """Base fake: subclasses route paths in :meth:`default_reply` and build wire bodies."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._replies: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self.port = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app)

    async def close(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def calls(self) -> int:
        return len(self.requests)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def push(self, reply: Reply) -> None:
        """Script the next answer (answers are used in the order pushed)."""
        self._replies.append(reply)

    def default_reply(self, request: Recorded) -> Reply:
        return Reply(status=404, body={"error": {"message": f"no route {request.path}"}})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        recorded = Recorded(request.method, request.path, CIMultiDict(request.headers), raw)
        self.requests.append(recorded)
        reply = self._replies.popleft() if self._replies else self.default_reply(recorded)
        if reply.gate is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reply.gate.wait(), GATE_TIMEOUT_S)
        if reply.frames is None:
            return _plain(reply)
        response = await _stream(request, reply)
        if reply.hold:
            await self._released.wait()
        if reply.disconnect_after is None:
            await response.write_eof()
        return response


def _plain(reply: Reply) -> web.Response:
    body = reply.body if isinstance(reply.body, bytes) else orjson.dumps(reply.body)
    headers = {"content-type": "application/json", **reply.headers}
    return web.Response(status=reply.status, body=body, headers=headers)


async def _stream(request: web.Request, reply: Reply) -> web.StreamResponse:
    headers = {"content-type": "text/event-stream", "cache-control": "no-cache", **reply.headers}
    response = web.StreamResponse(status=reply.status, headers=headers)
    await response.prepare(request)
    for number, frame in enumerate(reply.frames or []):
        if reply.disconnect_after is not None and number >= reply.disconnect_after:
            break
        await response.write(frame)
    if reply.disconnect_after is not None and request.transport is not None:
        request.transport.close()  # chunked body never terminated: the client sees a drop
    return response
