"""A Lua script called with less client work than redis-py's ``AsyncScript``: the request
path's reserve and settle scripts are one call each per request, and the client side of a
call, not Redis, was most of their cost (about 90 us of CPU per call with some forty
arguments through ``AsyncScript``, half of it without).

On a single Redis (``redis.asyncio.Redis``, a connection pool, hiredis installed) ``Script``
sends ``EVALSHA`` itself: it takes a connection from the client's pool (bounded as every
command is, ``scaled.redis_client``), packs the whole command in one hiredis call (the
arguments are already strings: no per-argument encoding in Python), sends it and reads the
answer on that connection, and returns it to the pool. What ``execute_command`` does
around that is kept: the connection's own ``retry`` (a dropped connection is disconnected
and the command sent once more on a new one, as configured in ``scaled.redis_client``), the
socket timeouts of ``send_packed_command`` and ``read_response`` (which drop the connection
on a timeout, an error or a cancel), and the pool's bounded wait. An error answer raises as
it does there (``ResponseError``); ``NOSCRIPT`` (a restarted Redis, a ``SCRIPT FLUSH``)
loads the script and sends the call once more, as ``AsyncScript`` does. Nothing else
differs: ``EVALSHA`` has no response callback in redis-py, so the answer is the one
``AsyncScript`` would give.

Anywhere else (a Redis Cluster, which routes each call by its keys; no hiredis) the call
goes through redis-py's ``AsyncScript`` unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

Pack = Callable[[tuple[Any, ...]], bytes]
pack_command: Pack | None
try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is optional
    pack_command = None


class Script:
    """``await script(keys=[...], args=[...])``, as redis-py's ``AsyncScript``; keys and
    args are strings (or bytes)."""

    def __init__(self, client: Any, text: str) -> None:
        self._client = client
        self._script = client.register_script(text)
        self._direct = (
            pack_command is not None
            and isinstance(client, aioredis.Redis)
            and not client.single_connection_client
        )
        # redis-py before 5.3 wants the command's name (later ones deprecate passing it)
        self._named = self._direct and _names_command(client.connection_pool.get_connection)

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[str | bytes] = ()) -> Any:
        if not self._direct:
            return await self._script(keys=keys, args=args)
        assert pack_command is not None
        packed = [pack_command(("EVALSHA", self._script.sha, len(keys), *keys, *args))]
        try:
            return await self._send(packed)
        except NoScriptError:  # the server lost its scripts (restart, SCRIPT FLUSH)
            await self._client.script_load(self._script.script)
            return await self._send(packed)

    async def _send(self, packed: list[bytes]) -> Any:
        pool = self._client.connection_pool
        conn = await (pool.get_connection("EVALSHA") if self._named else pool.get_connection())
        try:

            async def exchange() -> Any:
                await conn.send_packed_command(packed)
                return await conn.read_response()

            async def dropped(_error: BaseException) -> None:
                await conn.disconnect()

            return await conn.retry.call_with_retry(exchange, dropped)
        finally:
            await pool.release(conn)


def _names_command(get_connection: Callable[..., Any]) -> bool:
    """Whether a pool's ``get_connection`` requires the command's name."""
    param = inspect.signature(get_connection).parameters.get("command_name")
    return param is not None and param.default is inspect.Parameter.empty
