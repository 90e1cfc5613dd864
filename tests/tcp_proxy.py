"""A loopback TCP proxy that a test can cut, stall and restore, for outage tests.

The proxy listens on a free 127.0.0.1 port and forwards to ``target``. It runs on an asyncio
loop in a background thread (``LoopThread``), so a synchronous test drives it directly:

- ``cut()``: drop every open connection, and close each new one as soon as it is accepted
  (the client sees a reset, as when a server goes away);
- ``stall()``: accept and hold connections but forward nothing either way (the client sees
  a server that stopped answering, as in a network partition);
- ``restore()``: forward again; connections held during a stall are dropped.

``LoopThread.run(coro)`` runs any coroutine on the same loop (e.g. a fake upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 65536


class LoopThread:
    """An asyncio loop running in a daemon thread until ``close``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class TcpProxy:
    def __init__(self, loop: LoopThread, target: tuple[str, int]) -> None:
        self._loop = loop
        self._target = target
        self._mode = "forward"
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        self.accepted = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._loop.run(self._start())
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        self._loop.run(self._set("cut"))

    def stall(self) -> None:
        self._loop.run(self._set("stall"))

    def restore(self) -> None:
        self._loop.run(self._set("forward"))

    def close(self) -> None:
        self._loop.run(self._close())

    async def _set(self, mode: str) -> None:
        previous, self._mode = self._mode, mode
        if mode == "cut" or (mode == "forward" and previous == "stall"):
            for link in list(self._links):
                link.drop()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.drop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == "cut":
            writer.transport.abort()
            return
        link = _Link(self, writer)
        self._links.add(link)
        try:
            await link.run(reader, self._target)
        finally:
            self._links.discard(link)

    def flowing(self) -> bool:
        return self._mode == "forward"


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: TcpProxy, client: asyncio.StreamWriter) -> None:
        self._proxy = proxy
        self._writers: list[asyncio.StreamWriter] = [client]
        self._resume = asyncio.Event()
        self._dropped = False

    def drop(self) -> None:
        self._dropped = True
        for writer in self._writers:
            writer.transport.abort()
        self._resume.set()

    async def _wait_flowing(self) -> None:
        while not self._proxy.flowing() and not self._dropped:
            self._resume.clear()
            await self._resume.wait()

    async def run(self, reader: asyncio.StreamReader, target: tuple[str, int]) -> None:
        await self._wait_flowing()  # a connection accepted during a stall waits (or is dropped)
        if self._dropped:
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            self.drop()
            return
        self._writers.append(up_writer)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, self._writers[0])),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            self.drop()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                await self._wait_flowing()  # stalled: hold the bytes, forward nothing
                if self._dropped or writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()


@contextlib.contextmanager
def proxy_to(loop: LoopThread, target: tuple[str, int]) -> Iterator[TcpProxy]:
    proxy = TcpProxy(loop, target).start()
    try:
        yield proxy
    finally:
        proxy.close()
