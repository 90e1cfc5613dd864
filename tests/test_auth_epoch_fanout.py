"""Issue [9], acceptance 4: a revoked key is refused by every replica within 1 s, and
authentication makes no Redis command per request (counted with ``INFO commandstats``).

The replicas' auth epoch is kept on each replica by ``stores.redis.epoch.EpochWatch``: a
change is announced with ``PUBLISH`` and caught by a poll if the announcement is lost; a
replica that has not heard from Redis for ``BOUND_S`` trusts nothing (503).

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (skipped when absent, failed
with FAREBOX_REQUIRE_SERVICES=1). The command-count test starts a Redis server of its own on a
free loopback port, so other clients of the shared Redis do not blur the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.errors import ConfigError, LimiterUnavailable
from farebox.stores.redis.epoch import BOUND_S, POLL_S, TASK_NAME, EpochWatch
from farebox.stores.scaled import ScaledStore
from farebox.stores.timeouts import StoreTimeouts
from tests.contracts.builders import T0, key, tenant
from tests.e2e import free_port
from tests.outage import REDIS, dsn, fresh_databases, redis_url, require_services
from tests.tcp_proxy import LoopThread, proxy_to

CHAT = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
WATCH_TASK = TASK_NAME
CLOSE_BOUND_S = 30.0  # closing a store, its Redis cut or not, ends well within this
SLACK_S = 5.0  # how long a loaded host may take beyond the bound before a test gives up


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


async def until(what: str, check: Callable[[], Awaitable[Any]], within: float) -> Any:
    """Await ``check`` until it returns something truthy; fail at the deadline, a check
    that never returns included (its traceback then shows where it waited)."""
    deadline = time.monotonic() + within
    async with asyncio.timeout(within):
        while not (result := await check()):
            assert time.monotonic() < deadline, f"{what}: not within {within} s"
            await asyncio.sleep(0.01)  # polling interval; the deadline bounds the wait
    return result


def watch_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(WATCH_TASK) and not t.done()]


@pytest.fixture
def database() -> Iterator[str]:
    require_services()
    with fresh_databases(1) as [name]:
        yield name


@pytest.fixture
def private_redis() -> Iterator[int]:
    """A Redis server of this test's own, on a free loopback port: its command counts are
    this test's alone."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed: the command count is untested"
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             check=False).stdout.strip() != b"PONG":  # fmt: skip
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)  # polling interval; the deadline bounds the wait
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def two_replicas(make_gateway: Any, config: dict[str, Any]) -> AsyncIterator[Any]:
    env = {"FAREBOX_SECRET": secrets.token_hex(32)}
    async with make_gateway(config, env=env) as a, make_gateway(config, env=env) as b:
        yield a, b


async def new_key(gw: Any, tenant_id: str) -> dict[str, Any]:
    await gw.tenant(tenant_id)
    r = await gw.client.post(
        f"/admin/v1/tenants/{tenant_id}/keys", json={"name": "k"}, headers=gw.admin
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def chat(gw: Any, raw: str) -> httpx.Response:
    return await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(raw))


async def served_until_refused(gw: Any, raw: str, within: float) -> tuple[list[float], float]:
    """Send requests one after another until one is refused: when each served one was sent,
    and when the refused one was."""
    served: list[float] = []
    deadline = time.monotonic() + within
    while True:
        sent = time.monotonic()
        r = await chat(gw, raw)
        if r.status_code != 200:
            assert r.status_code == 401, r.text
            return served, sent
        served.append(sent)
        assert sent < deadline, f"still served {within} s after the revocation"
        await asyncio.sleep(0.005)  # pacing of the probe requests


# --- fan-out across replicas ------------------------------------------------------------------


async def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_the_bound(
    make_gateway: Any, database: str
) -> None:
    config = {"database": dsn(database), "redis": redis_url()}
    async with two_replicas(make_gateway, config) as (a, b):
        rec = await new_key(a, "acme")
        for gw in (a, b, a, b):  # the second round is served from each replica's cache
            assert (await chat(gw, rec["key"])).status_code == 200
        r = await a.client.delete(f"/admin/v1/keys/{rec['id']}", headers=a.admin)
        assert r.status_code == 200, r.text
        revoked_at = time.monotonic()
        assert (await chat(a, rec["key"])).status_code == 401  # at once where it was revoked
        served, refused_at = await served_until_refused(b, rec["key"], BOUND_S + SLACK_S)
        print(f"replica B refused the revoked key {refused_at - revoked_at:.4f} s after the "
              f"revocation returned ({len(served)} served before)")  # fmt: skip
        # the guarantee: nothing sent a bound after the revocation is served
        assert all(sent < revoked_at + BOUND_S for sent in served), (served, revoked_at)


async def test_a_tenant_paused_on_one_replica_is_refused_by_the_other_within_the_bound(
    make_gateway: Any, database: str
) -> None:
    config = {"database": dsn(database), "redis": redis_url()}
    async with two_replicas(make_gateway, config) as (a, b):
        rec = await new_key(a, "acme")
        for gw in (a, b, a, b):
            assert (await chat(gw, rec["key"])).status_code == 200
        r = await b.client.post("/admin/v1/tenants/acme/pause", json={}, headers=b.admin)
        assert r.status_code == 200, r.text
        paused_at = time.monotonic()
        assert (await chat(b, rec["key"])).status_code == 403
        refused = await until("tenant paused on replica A", lambda: _refused(a, rec["key"]),
                              BOUND_S + SLACK_S)  # fmt: skip
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "tenant_paused"
        print(f"replica A refused the paused tenant {time.monotonic() - paused_at:.4f} s later")


async def _refused(gw: Any, raw: str) -> httpx.Response | None:
    r = await chat(gw, raw)
    return r if r.status_code != 200 else None


async def test_a_lost_announcement_is_caught_by_the_poll_within_the_bound(database: str) -> None:
    prefix = f"epoch-{uuid.uuid4().hex[:8]}"
    one, two = (ScaledStore.from_urls(dsn(database), redis_url(), prefix=prefix) for _ in "12")
    await one.open()
    try:
        await two.open()
        try:
            await one.create_tenant(tenant("acme"))
            await until("the create seen", lambda: _at_least(two, 1), SLACK_S)
            before = await two.auth_epoch()
            # a change whose PUBLISH never went out (its replica died between the two)
            await two._client.incr(f"{{{prefix}}}:auth_epoch")
            landed = time.monotonic()
            await until("the lost change seen", lambda: _moved(two, before), BOUND_S + SLACK_S)
            took = time.monotonic() - landed
            print(f"a change without its announcement was seen {took:.3f} s after it landed")
            assert await one.auth_epoch() > 0
        finally:
            await two.close()
    finally:
        await one.close()


async def _moved(store: ScaledStore, before: int | None) -> int | None:
    """The store's epoch once it differs from ``before`` (``None`` before: any value)."""
    now = store._epoch.current()
    return now if now is not None and now != before else None


# --- no Redis command per request -------------------------------------------------------------


async def test_authentication_makes_no_redis_command_per_request(
    make_gateway: Any, database: str, private_redis: int
) -> None:
    url = f"redis://127.0.0.1:{private_redis}/0"
    counter = aioredis.Redis(host="127.0.0.1", port=private_redis)
    requests = 300
    try:
        async with make_gateway({"database": dsn(database), "redis": url},
                                env={"FAREBOX_SECRET": secrets.token_hex(32)}) as gw:  # fmt: skip
            rec = await new_key(gw, "acme")
            for _ in range(3):  # warm: the key and tenant are cached
                assert (await chat(gw, rec["key"])).status_code == 200
            before = await counter.info("commandstats")
            started = time.monotonic()
            for _ in range(requests):
                assert (await chat(gw, rec["key"])).status_code == 200
            took = time.monotonic() - started
            after = await counter.info("commandstats")
    finally:
        await counter.aclose()
    calls = {name.removeprefix("cmdstat_"): after[name]["calls"] - before.get(name, {}).get(
        "calls", 0) for name in after}  # fmt: skip
    calls["info"] -= 1  # our own INFO
    calls = {name: n for name, n in calls.items() if n}
    print(f"{requests} warm requests in {took:.2f} s: Redis commands {calls}")
    polls = took / POLL_S + 3  # the background poll's GETs, and a margin for its timing
    assert calls.get("get", 0) <= polls, calls
    assert calls.get("get", 0) < requests / 10, calls
    # this plan has no budget nor limit: nothing at all is asked of Redis per request
    assert sum(calls.values()) < requests / 10, calls


# --- the watcher's own guarantees --------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["poll", "message", "wait"]),
                          st.integers(0, 50), st.floats(0, 2.0)), max_size=60))  # fmt: skip
def test_the_local_epoch_never_goes_back(steps: list[tuple[str, int, float]]) -> None:
    """Polls, announcements arriving late or repeated, and lapses of trust in any order: the
    local epoch never decreases, and moves whenever a larger Redis value is seen."""
    clock = FakeClock()
    watch = EpochWatch(object(), clock=clock)  # type: ignore[arg-type]
    watch._observe(0, clock.now)
    last, seen = watch.current(), 0
    for kind, value, wait in steps:
        moved = False
        if kind == "wait":
            clock.now += wait
        else:
            moved, seen = value > seen, max(seen, value)
            watch._observe(value, clock.now if kind == "poll" else None)
        now = watch.current()
        if now is None:
            assert clock.now - watch._confirmed_at >= BOUND_S
            continue
        assert last is None or now >= last, (last, now)
        assert not moved or last is None or now > last, (last, now)
        last = now


async def test_close_ends_the_watch_and_open_failing_leaves_nothing_running(
    database: str,
) -> None:
    prefix = f"epoch-{uuid.uuid4().hex[:8]}"
    store = ScaledStore.from_urls(dsn(database), redis_url(), prefix=prefix)
    await store.open()
    assert store._epoch.running and len(watch_tasks()) == 1
    [task] = watch_tasks()
    await store.close()
    assert task.done() and not watch_tasks() and not store._epoch.running
    # another database owns the prefix: refused before the watch starts
    other = aioredis.Redis(host=REDIS[0], port=REDIS[1], db=12)
    taken = f"epoch-{uuid.uuid4().hex[:8]}"
    await other.set(f"{{{taken}}}:owner", '{"database_id": "someone-else"}')
    try:
        refused = ScaledStore.from_urls(dsn(database), redis_url(), prefix=taken)
        with pytest.raises(ConfigError):
            await refused.open()
        assert not watch_tasks() and not refused._epoch.running
        await refused.close()  # safe after a failed open: closes its Redis clients
    finally:
        await other.delete(f"{{{taken}}}:owner")
        await other.aclose()


async def test_open_failing_at_the_watch_start_leaves_nothing_running(database: str) -> None:
    store = ScaledStore.from_urls(
        dsn(database), redis_url(), prefix=f"epoch-{uuid.uuid4().hex[:8]}"
    )

    async def unreachable(name: str) -> Any:
        raise ConnectionError("Redis went away between the claim and the watch")

    store._epoch._client = type("Broken", (), {"get": staticmethod(unreachable)})()  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await store.open()
    assert not watch_tasks() and not store._epoch.running
    assert store._pg._pool_obj is None  # the ledger's pool is closed too
    await store.close()


class CountingGets:
    """The watch's client, counting its GETs."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.gets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def get(self, name: str) -> Any:
        self.gets += 1
        return await self._client.get(name)


async def test_a_held_up_poll_is_made_up_by_one_shared_read_not_a_503(database: str) -> None:
    """A replica whose poll was held up (its event loop stalled past the bound) reads Redis
    once, for every request waiting, instead of refusing them."""
    store = ScaledStore.from_urls(
        dsn(database), redis_url(), prefix=f"epoch-{uuid.uuid4().hex[:8]}"
    )
    await store.open()
    try:
        before = await store.auth_epoch()
        skew = [0.0]
        store._epoch._clock = lambda: time.monotonic() + skew[0]
        counting = CountingGets(store._epoch._client)
        store._epoch._client = counting  # type: ignore[assignment]
        skew[0] = 10.0  # as if nothing had run for 10 s
        assert store._epoch.current() is None
        answers = await asyncio.gather(*(store.auth_epoch() for _ in range(50)))
        assert counting.gets <= 2, counting.gets  # one shared read (and perhaps one poll)
        assert len(set(answers)) == 1 and answers[0] > before  # caches filled before: dropped
        assert store._epoch.current() == answers[0]
    finally:
        await store.close()
    assert not watch_tasks()


# --- Redis unreachable: the epoch is not trusted -----------------------------------------------


async def test_an_unreachable_redis_is_a_503_after_the_bound_and_trust_returns_with_it(
    database: str,
) -> None:
    require_services()
    loop = LoopThread()
    try:
        with proxy_to(loop, REDIS) as proxy:
            prefix = f"epoch-{uuid.uuid4().hex[:8]}"
            timeouts = StoreTimeouts(redis_command_s=0.5, redis_connect_s=0.5)
            cut = ScaledStore.from_urls(dsn(database), redis_url(("127.0.0.1", proxy.port)),
                                        prefix=prefix, timeouts=timeouts)  # fmt: skip
            direct = ScaledStore.from_urls(dsn(database), redis_url(), prefix=prefix)
            await cut.open()
            await direct.open()
            try:
                await _cut_and_restore(cut, direct, proxy)
            finally:
                async with asyncio.timeout(CLOSE_BOUND_S):  # a close that hangs fails here
                    await direct.close()
                    await cut.close()
    finally:
        loop.close()


async def _cut_and_restore(cut: ScaledStore, direct: ScaledStore, proxy: Any) -> None:
    await direct.create_tenant(tenant("acme"))
    await direct.create_key(key("k1", "acme"))
    await until("the changes seen", lambda: _at_least(cut, 2), SLACK_S)
    before = await cut.auth_epoch()
    await asyncio.to_thread(proxy.cut)
    cut_at = time.monotonic()
    await until("an untrusted epoch", lambda: _untrusted(cut), BOUND_S + SLACK_S)
    print(f"distrusted {time.monotonic() - cut_at:.3f} s after the cut")
    # a change made on the cut replica: committed, but its bump cannot land
    with pytest.raises(LimiterUnavailable):
        await cut.update_key("k1", {"revoked_at": T0})
    assert await _untrusted(cut)
    seen = await direct.auth_epoch()
    await asyncio.to_thread(proxy.restore)
    # the bump is redone once Redis answers: the other replica sees the revocation
    await until("the redone bump seen", lambda: _moved(direct, seen), BOUND_S + SLACK_S)
    after = await until("trusted again", lambda: _moved(cut, None), BOUND_S + SLACK_S)
    assert after > before


async def _at_least(store: ScaledStore, value: int) -> bool:
    return store._epoch._seen >= value


async def _untrusted(store: ScaledStore) -> bool:
    try:
        await store.auth_epoch()
    except LimiterUnavailable as exc:
        assert exc.status == 503 and "Redis" in str(exc)
        return True
    return False


async def test_close_while_redis_is_unreachable_ends_the_watch(database: str) -> None:
    """A replica stopped while its Redis is cut (a test that failed mid-outage, a shutdown
    during one) ends its watch: its poll, failing to connect, may see its cancel turned into
    a connection error by redis-py, and still stops."""
    require_services()
    loop = LoopThread()
    try:
        with proxy_to(loop, REDIS) as proxy:
            timeouts = StoreTimeouts(redis_command_s=0.5, redis_connect_s=0.5)
            cut = ScaledStore.from_urls(dsn(database), redis_url(("127.0.0.1", proxy.port)),
                                        prefix=f"epoch-{uuid.uuid4().hex[:8]}",
                                        timeouts=timeouts)  # fmt: skip
            await cut.open()
            try:
                await asyncio.to_thread(proxy.cut)
                await until("an untrusted epoch", lambda: _untrusted(cut), BOUND_S + SLACK_S)
            finally:
                async with asyncio.timeout(BOUND_S + SLACK_S):
                    await cut.close()
            assert watch_tasks() == []
    finally:
        loop.close()
