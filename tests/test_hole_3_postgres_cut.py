"""Issue 7, item 3: when the ledger's database (PostgreSQL) is unreachable, requests are
refused with 503 ``ledger_unavailable`` before any upstream call, and the gateway recovers
without a restart. A request that was already upstream when the database went away is
answered 503 ``ledger_unavailable`` and kept as ``unsettled`` at its reserved amount.

PostgreSQL is reached through a loopback TCP proxy (``tests.tcp_proxy``) that the test cuts
and stalls; the upstream is a loopback fake that counts its calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.openai_upstream import OpenAIUpstream
from farebox.core.money import parse_usd
from farebox.errors import LedgerUnavailable
from farebox.gateway.inflight import InFlight
from farebox.gateway.ledger import LedgerWriter
from farebox.stores.memory.store import MemoryStore
from tests.contracts.builders import entry
from tests.e2e import (
    ServerProcess,
    admin_headers,
    create_tenant_key,
    free_port,
    running,
    write_config,
)
from tests.outage import (
    PG,
    dsn,
    fresh_databases,
    ledger,
    poll,
    redis_url,
    require_services,
    scaled_env,
)
from tests.tcp_proxy import LoopThread, TcpProxy, proxy_to

READYZ_S = 1.0
PROBE_S = 0.5
LEASE_S = 2.0
SLOW_MS = 1500  # the slow model's upstream latency: long enough to cut the database meanwhile
PLANS = {"p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "1000"}]}}
CHAT = {"model": "gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Scene:
    server: ServerProcess
    proxy: TcpProxy
    upstream: OpenAIUpstream
    database: str
    auth: dict[str, str]


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    require_services()
    loop = LoopThread()
    upstream = OpenAIUpstream()
    loop.run(upstream.start())
    try:
        with fresh_databases(1) as [name], proxy_to(loop, PG) as proxy:
            config = write_config(
                tmp_path,
                providers={
                    "up": {"kind": "openai", "base_url": f"{upstream.root_url}/v1",
                           "api_key": "env:UP_KEY"},
                    "slow": {"kind": "mock", "seed": 7, "latency_ms": SLOW_MS},
                },
                models={"gpt-4o-mini": [{"provider": "up", "model": "gpt-4o-mini"}],
                        "slow-mini": [{"provider": "slow", "model": "gpt-4o-mini"}]},
                plans=PLANS,
                database=dsn(name, ("127.0.0.1", proxy.port)),
                redis=redis_url(),
                budgets={"lease_s": LEASE_S, "wait_for_room_s": 0},
                timeouts={"postgres_command_s": 1.0, "postgres_connect_s": 1.0,
                          "ledger_probe_s": PROBE_S, "readyz_s": READYZ_S},
            )  # fmt: skip
            port = free_port()
            args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
            env = {**scaled_env(), "UP_KEY": "sk-test"}
            with running(args, cwd=tmp_path, env=env, port=port) as server:
                key = create_tenant_key(server.base_url, "t", "p")
                auth = {"Authorization": f"Bearer {key}"}
                yield Scene(server, proxy, upstream, name, auth)
    finally:
        loop.run(upstream.close())
        loop.close()


def _chat(scene: Scene, body: dict[str, Any] = CHAT) -> httpx.Response:
    url = f"{scene.server.base_url}/v1/chat/completions"
    return httpx.post(url, json=body, headers=scene.auth, timeout=30.0)


def _readyz(scene: Scene) -> tuple[int, float]:
    started = time.monotonic()
    r = httpx.get(f"{scene.server.base_url}/readyz", timeout=30.0)
    return r.status_code, time.monotonic() - started


def _refused_without_upstream(scene: Scene, count: int) -> None:
    before = scene.upstream.calls
    answers = [_chat(scene) for _ in range(count)]
    assert [(r.status_code, r.json()["error"]["code"]) for r in answers] == [
        (503, "ledger_unavailable")
    ] * count, answers[0].text
    assert scene.upstream.calls == before, (
        "a request reached the upstream while the ledger was down"
    )


def _recovers(scene: Scene) -> list[str]:
    served = poll("served again", lambda: (r := _chat(scene)).status_code == 200 and r, 20)
    poll("ready again", lambda: _readyz(scene)[0] == 200, 10)
    ids = [served.headers["x-farebox-request-id"]]
    ids += [r.headers["x-farebox-request-id"] for r in (_chat(scene) for _ in range(3))]
    return ids


def _assert_billed(scene: Scene, ids: list[str]) -> None:
    rows = {r["request_id"]: r for r in ledger(scene.database)}
    for rid in ids:
        assert rows[rid]["status"] == "ok" and rows[rid]["cost"] > 0, rows.get(rid)


def test_a_postgres_cut_refuses_before_the_upstream_and_recovers(scene: Scene) -> None:
    served = [_chat(scene) for _ in range(3)]
    assert [r.status_code for r in served] == [200] * 3
    scene.proxy.cut()
    timings = [poll("readyz says 503", lambda: (t := _readyz(scene))[0] == 503 and t, 10)]
    timings += [_readyz(scene) for _ in range(3)]
    _refused_without_upstream(scene, 20)
    scene.proxy.restore()
    ids = _recovers(scene)
    _assert_billed(scene, [r.headers["x-farebox-request-id"] for r in served] + ids)
    assert all(status == 503 and took < READYZ_S + 0.5 for status, took in timings), timings


def test_a_postgres_stall_answers_readyz_in_time_and_refuses_before_the_upstream(
    scene: Scene,
) -> None:
    assert _chat(scene).status_code == 200
    scene.proxy.stall()
    status, took = _readyz(scene)
    assert status == 503 and took < READYZ_S + 0.5, (status, took)
    poll("readyz says 503", lambda: _readyz(scene)[0] == 503, 10)
    _refused_without_upstream(scene, 10)
    scene.proxy.restore()
    _assert_billed(scene, _recovers(scene))


def test_a_request_upstream_when_postgres_goes_keeps_its_hold_as_unsettled(scene: Scene) -> None:
    admin = f"{scene.server.base_url}/admin/v1/tenants/t/budgets"

    def reserved() -> int:
        r = httpx.get(admin, headers=admin_headers(), timeout=10)
        return parse_usd(r.json()["data"][0]["reserved_usd"])

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_chat, scene, {**CHAT, "model": "slow-mini"})
        held = poll("the slow request holds its reservation", reserved, 10)
        scene.proxy.cut()  # while the request is upstream
        answer = pending.result(timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "ledger_unavailable"
    rid = answer.headers["x-farebox-request-id"]
    scene.proxy.restore()
    rows = poll("recorded as unsettled by lease reclaim", lambda: [
        r for r in ledger(scene.database) if r["request_id"] == rid], 30)  # fmt: skip
    [row] = rows
    assert (row["status"], row["cost"]) == ("unsettled", 0)
    assert parse_usd(row["metadata"]["reserved_usd"]) == held  # what may have been spent
    poll("hold released by reclaim", lambda: reserved() == 0, 10)


# --- the writer's health flag, without a database ---------------------------------------


class _BrokenDisk(MemoryStore):
    """A store whose ledger writes fail as a full disk does, until ``healed``."""

    def __init__(self) -> None:
        super().__init__()
        self.healed = False

    async def append_ledger(self, entries: Any) -> None:
        if not self.healed:
            raise OSError(28, "No space left on device")
        await super().append_ledger(entries)

    def append_ledger_now(self, entries: Any) -> bool:
        if not self.healed:
            raise OSError(28, "No space left on device")
        return super().append_ledger_now(entries)

    async def ping(self) -> bool:
        return self.healed


async def test_a_store_that_cannot_write_flips_the_writer_down_then_a_probe_flips_it_up() -> None:
    store = _BrokenDisk()
    writer = LedgerWriter(store, in_flight=InFlight())
    writer.start()
    try:
        writer.ensure_available()  # up until a write fails
        with pytest.raises(LedgerUnavailable):
            await writer.append(entry("r1", cost=5))
        with pytest.raises(LedgerUnavailable) as refused:
            writer.ensure_available()
        assert refused.value.code == "ledger_unavailable" and refused.value.status == 503
        store.healed = True
        deadline = time.monotonic() + 5
        while not writer.available:
            assert time.monotonic() < deadline, "the probe never flipped the flag up"
            await asyncio.sleep(0.05)  # polling interval; the deadline bounds the wait
        await writer.append(entry("r2", cost=5))
        assert [e.request_id for e in await store.ledger()] == ["r2"]
    finally:
        await writer.stop()


async def test_the_sqlite_ledger_probe_writes_so_a_read_only_disk_stays_down(
    tmp_path: Path,
) -> None:
    """A read succeeds on a full or read-only disk: the probe that brings the ledger back up
    in the SQLite modes must write, or the gateway would flap between refusing and serving
    requests it cannot record."""
    import sqlite3

    from farebox.stores.sqlite.store import SQLiteStore

    store = SQLiteStore(tmp_path / "f.db")
    await store.open()
    try:
        assert await store.probe_write()
        await store._run(lambda: store._db.execute("PRAGMA query_only = ON"))  # no writes now
        assert await store.ping()  # a read still answers...
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.probe_write()  # ...the write probe does not
        await store._run(lambda: store._db.execute("PRAGMA query_only = OFF"))
        assert await store.probe_write()
    finally:
        await store.close()
