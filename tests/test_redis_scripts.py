"""``stores.redis.scripts.Script``, the request path's way to run a Lua script on a single
Redis (``EVALSHA`` sent on a pooled connection, not through redis-py's ``AsyncScript``):

- it answers what ``AsyncScript`` answers (integers, bulk strings, nil, nested arrays) and
  raises the same ``ResponseError`` for an error reply (the stores' ``FAREBOX_*`` errors);
- a server that lost its scripts (``SCRIPT FLUSH``, as after a restart) gets the script
  loaded again and the call goes through, on every call that meets it;
- a connection is kept for the next call only after a completed exchange (an error answer
  included), at most ``KEEP`` of them, every one counted by the pool; one that failed,
  timed out or was cancelled goes back to the pool, disconnected;
- a connection the server dropped (found on sending, or kept while the server closed it) is
  connected again and the call sent once more, as the client's retry does for any command;
  a server that is gone raises ``ConnectionError`` (the stores' "Redis down", a 503);
- the budget store on such a server keeps working across a ``SCRIPT FLUSH``.

Each test starts a ``redis-server`` of its own on a free port (``bench.fleet_services``): it
flushes scripts and kills connections, which the shared Redis must never see.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from bench.fleet_services import ServiceError, redis_server
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from farebox.stores.redis.budgets import RedisBudgets
from farebox.stores.redis.scripts import Connections, Script, _names_command, pack_command
from farebox.stores.scaled import redis_client
from farebox.stores.timeouts import StoreTimeouts
from tests.contracts.builders import hold, reservation, settlement

ANSWERS = """
if ARGV[1] == 'fail' then return redis.error_reply('FAREBOX_CONFLICT ' .. KEYS[1]) end
redis.call('INCRBY', KEYS[1], ARGV[2])
return {tonumber(redis.call('GET', KEYS[1])), ARGV[1], false, {KEYS[2], {1, 'x'}}}
"""


@pytest.fixture
def port() -> Iterator[int]:
    try:
        with redis_server() as found:
            yield found
    except ServiceError as exc:
        pytest.skip(f"no private redis-server: {exc}")


@pytest.fixture
async def client(port: int) -> AsyncIterator[aioredis.Redis]:
    timeouts = StoreTimeouts(redis_command_s=1.0, redis_connect_s=1.0)
    c = redis_client(f"redis://127.0.0.1:{port}", timeouts, connections=4)
    try:
        yield c
    finally:
        await c.aclose()


def test_the_direct_path_is_the_one_under_test(client: aioredis.Redis) -> None:
    assert pack_command is not None, "hiredis is a dependency of the redis extra"
    assert Script(client, ANSWERS)._conns is not None


async def test_answers_and_errors_as_async_script(client: aioredis.Redis) -> None:
    ours, theirs = Script(client, ANSWERS), client.register_script(ANSWERS)
    keys = ["{t}:n", "{t}:other"]
    got = await ours(keys=keys, args=["a", "5"])
    want = await theirs(keys=keys, args=["a", "5"])
    assert got == [5, b"a", None, [b"{t}:other", [1, b"x"]]]
    assert want == [10, b"a", None, [b"{t}:other", [1, b"x"]]]  # the same shape, run twice
    shape = [None, [b"{t}:other", [1, b"x"]]]
    assert await ours(keys=keys, args=[b"bytes too", "1"]) == [11, b"bytes too", *shape]
    with pytest.raises(ResponseError, match="FAREBOX_CONFLICT {t}:n"):
        await ours(keys=keys, args=["fail", "0"])
    assert await ours(keys=keys, args=["after an error", "1"]) is not None  # connection fine


async def test_a_flushed_script_is_loaded_again(client: aioredis.Redis) -> None:
    script = Script(client, ANSWERS)
    assert (await script(keys=["k", "o"], args=["a", "1"]))[0] == 1
    for n in (2, 3):
        await client.script_flush()
        assert await client.script_exists(script.sha) == [False]
        assert (await script(keys=["k", "o"], args=["a", "1"]))[0] == n
        assert await client.script_exists(script.sha) == [True]


async def test_a_dropped_connection_is_replaced_and_a_gone_server_raises(
    client: aioredis.Redis, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(client, ANSWERS)
    await script(keys=["k", "o"], args=["a", "1"])
    real = Connection.send_packed_command
    broken: list[Connection] = []

    async def stale_once(self: Connection, *args: Any, **kwargs: Any) -> None:
        if not broken:  # a pooled connection whose server end is gone, found on sending
            broken.append(self)
            await self.disconnect()
            raise RedisConnectionError("Connection closed by the server before write")
        await real(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", stale_once)
    assert (await script(keys=["k", "o"], args=["a", "1"]))[0] == 2  # sent again, once
    assert len(broken) == 1
    monkeypatch.undo()
    admin = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
        assert (await script(keys=["k", "o"], args=["a", "1"]))[0] == 3  # a new connection
        await admin.shutdown(nosave=True)
    except RedisConnectionError:
        pass  # SHUTDOWN answers by closing the connection
    finally:
        await admin.aclose()
    assert script._conns is not None
    (kept,) = script._conns._idle
    with pytest.raises(RedisConnectionError):
        await script(keys=["k", "o"], args=["a", "1"])
    assert not script._conns._idle and not kept.is_connected  # not kept: given back
    assert kept in client.connection_pool._available_connections


async def test_connections_are_kept_only_after_a_completed_exchange(
    client: aioredis.Redis, port: int
) -> None:
    conns = Connections(client, keep=2)
    script = Script(client, ANSWERS, conns)
    pool = client.connection_pool
    await script(keys=["k", "o"], args=["a", "1"])
    assert len(conns._idle) == 1 and set(conns._idle) == pool._in_use_connections  # counted
    kept = conns._idle[0]
    await script(keys=["k", "o"], args=["a", "1"])
    assert conns._idle == [kept]  # the same one, taken and kept again
    with pytest.raises(ResponseError):
        await script(keys=["k", "o"], args=["fail", "0"])
    assert conns._idle == [kept] and kept.is_connected  # an error answer, read whole
    await asyncio.gather(*(script(keys=["k", "o"], args=["a", "1"]) for _ in range(4)))
    assert len(conns._idle) == 2 and len(pool._in_use_connections) == 2  # at most ``keep``
    taken = conns._idle[-1]  # the next one taken
    never = [pack_command(("EVAL", "while true do end", 0))]  # a script that never answers
    with pytest.raises(RedisTimeoutError):
        await Script._send(conns, never)
    admin = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        await admin.script_kill()
    finally:
        await admin.aclose()
    assert taken not in conns._idle and taken in pool._available_connections
    assert not taken.is_connected  # timed out: back to the pool, disconnected


async def test_the_budget_store_works_across_a_script_flush(client: aioredis.Redis) -> None:
    budgets = RedisBudgets(client, prefix=f"fbxtest-{uuid.uuid4().hex[:8]}")
    h = hold("tenant:acme:day", 100, tenant="acme")
    first = reservation("r1", 60, [h])
    assert (await budgets.reserve(first)).ok
    await client.script_flush()
    refused = await budgets.reserve(reservation("r2", 60, [h]))  # 60 + 60 > 100
    assert not refused.ok and refused.states[0].reserved == 60
    await client.script_flush()
    await budgets.settle([settlement("r1", 30, tenant_id="acme")])
    await client.script_flush()
    assert (await budgets.reserve(reservation("r3", 70, [h]))).ok  # 30 used + 70 = 100
    (state,) = await budgets.states([h])
    assert (state.used, state.reserved) == (30, 70)


def test_a_pool_that_wants_the_command_name_gets_it() -> None:
    """redis-py before 5.3 requires ``get_connection``'s name; later ones deprecate it."""

    async def old(command_name: str, *keys: Any, **options: Any) -> None: ...

    async def new(command_name: str | None = None, *keys: Any, **options: Any) -> None: ...

    async def newest() -> None: ...

    assert _names_command(old) and not _names_command(new) and not _names_command(newest)
