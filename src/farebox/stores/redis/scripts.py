"""A Lua script called with less client work than redis-py's ``AsyncScript``: the request
path's reserve and settle scripts are one call each per request, and the client side of a
call, not Redis, was most of their cost (about 90 us of CPU per call with some forty
arguments through ``AsyncScript``; about 30 us this way).

On a single Redis (``redis.asyncio.Redis``, a connection pool, hiredis installed) ``Script``
sends ``EVALSHA`` itself: it takes a connection (``Connections``, below), packs the whole
command in one hiredis call (the arguments are already strings: no per-argument encoding in
Python), sends it and reads the answer on that connection, and gives the connection back.
What ``execute_command`` does around that is kept: the connection's own ``retry`` (a dropped
connection is disconnected and the command sent once more on a new one, as configured in
``scaled.redis_client``), the socket timeouts of ``send_packed_command`` and
``read_response`` (which drop the connection on a timeout, an error or a cancel), and the
pool's bounded wait for a connection. An error answer raises as it does there
(``ResponseError``); ``NOSCRIPT`` (a restarted Redis, a ``SCRIPT FLUSH``) loads the script
and sends the call once more, as ``AsyncScript`` does. Nothing else differs: ``EVALSHA`` has
no response callback in redis-py, so the answer is the one ``AsyncScript`` would give.

The connections: ``Connections`` keeps the last few given back (``KEEP``) for the next call
rather than returning them through redis-py's pool, whose take and give (a lock, a
condition, a timer and a read of the socket to check it) cost about 14 us a call. A kept
connection is one whose last exchange completed (the command sent, its whole answer read):
any failure, timeout or cancel in between disconnects it (redis-py does, in
``send_packed_command`` and ``read_response``) and it goes back to the pool. One the server
closed while it was kept (a restart) fails on its next use and is connected again by the
retry, as the pool's own check would have done. Kept connections stay checked out of the
pool, so they count in its bound (``KEEP`` of ``scaled.REDIS_CONNECTIONS``), and closing the
client closes them with the others; every other command takes its connection from the pool.

Anywhere else (a Redis Cluster, which routes each call by its keys; no hiredis) the call
goes through redis-py's ``AsyncScript`` unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

Pack = Callable[[tuple[Any, ...]], bytes]
pack_command: Pack | None
try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is optional
    pack_command = None


KEEP = 8  # connections kept between script calls, at most


class Connections:
    """One client's connections as the scripts take them: from the kept ones first (the
    last given back), else from the client's pool (its bounded wait)."""

    def __init__(self, client: Any, keep: int = KEEP) -> None:
        self._pool = client.connection_pool
        # redis-py before 5.3 wants the command's name (later ones deprecate passing it)
        self._named = _names_command(self._pool.get_connection)
        self._keep = keep
        self._idle: list[Any] = []

    async def take(self) -> Any:
        if self._idle:
            return self._idle.pop()
        pool = self._pool
        return await (pool.get_connection("EVALSHA") if self._named else pool.get_connection())

    async def give(self, conn: Any, *, completed: bool) -> None:
        """``completed``: its last exchange ended with the whole answer read."""
        if completed and conn.is_connected and len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            await self._pool.release(conn)


class Script:
    """``await script(keys=[...], args=[...])``, as redis-py's ``AsyncScript``; keys and
    args are strings (or bytes). ``connections``: shared by the scripts of one client."""

    def __init__(self, client: Any, text: str, connections: Connections | None = None) -> None:
        self._client = client
        self._script = client.register_script(text)
        direct = (
            pack_command is not None
            and isinstance(client, aioredis.Redis)
            and not client.single_connection_client
        )
        self._conns = (connections or Connections(client)) if direct else None

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[str | bytes] = ()) -> Any:
        if self._conns is None:
            return await self._script(keys=keys, args=args)
        assert pack_command is not None
        packed = [pack_command(("EVALSHA", self._script.sha, len(keys), *keys, *args))]
        try:
            return await self._send(self._conns, packed)
        except NoScriptError:  # the server lost its scripts (restart, SCRIPT FLUSH)
            await self._client.script_load(self._script.script)
            return await self._send(self._conns, packed)

    @staticmethod
    async def _send(conns: Connections, packed: list[bytes]) -> Any:
        conn = await conns.take()
        completed = False
        try:

            async def exchange() -> Any:
                await conn.send_packed_command(packed)
                return await conn.read_response()

            async def dropped(_error: BaseException) -> None:
                await conn.disconnect()

            try:
                answer = await conn.retry.call_with_retry(exchange, dropped)
            except ResponseError:  # an error answer, read whole: the connection is fine
                completed = True
                raise
            completed = True
            return answer
        finally:
            await conns.give(conn, completed=completed)


def _names_command(get_connection: Callable[..., Any]) -> bool:
    """Whether a pool's ``get_connection`` requires the command's name."""
    param = inspect.signature(get_connection).parameters.get("command_name")
    return param is not None and param.default is inspect.Parameter.empty
