"""``server.single_process``: one process owns its SQLite database, keeps budget and rate-limit
counters in memory, and journals reservations. The role contracts run against it too
(``tests/contracts/``); these tests cover what is particular to it: ownership,
counters surviving a restart, and unsettled entries after a SIGKILL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from farebox.core.records import Reservation
from farebox.errors import ConfigError
from farebox.stores.sqlite.single import SingleProcessSQLiteStore
from farebox.stores.sqlite.store import SQLiteStore
from tests.contracts.builders import T0, entry, hold, settlement, state
from tests.e2e import (
    admin_headers,
    child_env,
    create_tenant_key,
    db_path,
    free_port,
    ledger_rows,
    running,
    write_config,
)
from tests.test_budget_leases import CHAT, HELD, LIMIT, PLANS, TOO_LITTLE, budget, poll, serve_args


def reservation(rid: str, amount: int, holds: list[Any]) -> Reservation:
    placeholder = entry(f"req-{rid}", status="unsettled", http_status=0, reservation_id=rid)
    return Reservation(rid, amount, tuple(holds), T0 + 60, placeholder)


async def test_the_database_has_one_owner(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    owner = SingleProcessSQLiteStore(path)
    await owner.open()
    try:
        for other in (SQLiteStore(path), SingleProcessSQLiteStore(path)):
            with pytest.raises(ConfigError, match="f.db"):
                await other.open()
    finally:
        await owner.close()
    shared = SQLiteStore(path)
    await shared.open()  # free again once the owner is gone
    try:
        with pytest.raises(ConfigError, match="single_process"):
            await SingleProcessSQLiteStore(path).open()
    finally:
        await shared.close()


async def test_spend_survives_a_restart_and_a_crash_leaves_unsettled_entries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.db"
    day = hold("tenant:acme:day", 1000)
    store = SingleProcessSQLiteStore(path)
    await store.open()
    assert (await store.reserve(reservation("a", 300, [day]))).ok
    await store.append_ledger([settlement("a", 250)])
    assert (await store.reserve(reservation("b", 400, [day]))).ok  # in flight at the "crash"
    assert await state(store, day) == (250, 400, 1000)
    # a crash: the process goes away without settling "b" (its lock and files just close)
    await SQLiteStore.close(store)
    again = SingleProcessSQLiteStore(path)
    await again.open()
    try:
        assert await state(again, day) == (250, 0, 1000)  # spend kept, the dead hold gone
        unsettled = [e for e in await again.ledger("acme") if e.status == "unsettled"]
        assert [e.reservation_id for e in unsettled] == ["b"]
        assert (await again.reserve(reservation("c", 750, [day]))).ok
        assert not (await again.reserve(reservation("d", 1, [day]))).ok
    finally:
        await again.close()


def test_a_killed_single_process_gateway_leaves_unsettled_entries(tmp_path: Path) -> None:
    database = db_path(tmp_path)
    slow = {"kind": "mock", "seed": 7, "latency_ms": 30_000}
    config = write_config(
        tmp_path, providers={"sim": slow}, plans=PLANS, database=f"sqlite:///{database}",
        server={"single_process": True}, budgets={"wait_for_room_s": 0},
    )  # fmt: skip
    port = free_port()
    env = child_env()
    with running(serve_args(config, port), cwd=tmp_path, env=env, port=port) as a:
        key = create_tenant_key(a.base_url, "t", "p")
        # a second gateway on the same database is refused with a clear message
        other = free_port()
        with running(serve_args(config, other), cwd=tmp_path, env=env, port=other, wait=False) as b:
            assert b.proc.wait(timeout=30) != 0
            assert any("single_process" in line for line in b.lines), b.lines
        auth = {"Authorization": f"Bearer {key}"}
        with (
            httpx.Client(headers=admin_headers(), timeout=10.0) as admin,
            ThreadPoolExecutor(max_workers=HELD) as pool,
        ):
            url = f"{a.base_url}/v1/chat/completions"
            pending = [
                pool.submit(lambda: _post(url, auth)) for _ in range(HELD)
            ]  # they hold the budget while the upstream is slow
            poll(
                "the requests hold the budget",
                lambda: _remaining(budget(admin, a)) < TOO_LITTLE,
                timeout=10.0,
            )
            a.kill()
            for future in pending:
                assert isinstance(future.result(timeout=10), httpx.TransportError)
    rows = ledger_rows(database)
    assert rows == []  # nothing settled before the kill
    port = free_port()
    with running(serve_args(config, port), cwd=tmp_path, env=env, port=port) as restarted:
        with httpx.Client(headers=admin_headers(), timeout=10.0) as admin:
            r = admin.get(f"{restarted.base_url}/admin/v1/unsettled", params={"tenant": "t"})
            assert r.status_code == 200, r.text
            assert len(r.json()["data"]) == HELD
            after = budget(admin, restarted)
            assert after["remaining_usd"] == LIMIT and after["reserved_usd"] == "0.00"


def _post(url: str, auth: dict[str, str]) -> Any:
    try:
        return httpx.post(url, json=CHAT, headers=auth, timeout=60.0)
    except httpx.TransportError as exc:
        return exc


def _remaining(state: dict[str, Any]) -> int:
    from farebox.core.money import parse_usd

    return parse_usd(state["remaining_usd"])


async def test_the_journal_keeps_only_what_is_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orjson

    from farebox.stores.sqlite import single as sqlite_single

    monkeypatch.setattr(sqlite_single, "COMPACT_AFTER_BYTES", 2000)
    path = tmp_path / "f.db"
    day = hold("tenant:acme:day", 10**9)
    store = SingleProcessSQLiteStore(path)
    await store.open()
    journal = path.with_name("f.db-inflight")
    for i in range(40):  # keep two in flight, settle the rest
        assert (await store.reserve(reservation(f"r{i}", 10, [day]))).ok
        if i >= 2:
            await store.append_ledger([settlement(f"r{i}", 5)])
    lines = journal.read_bytes().splitlines()
    assert len(lines) < 40  # compacted at least once
    kept = {orjson.loads(line)["reservation_id"] for line in lines}
    assert {"r0", "r1"} <= kept
    await SQLiteStore.close(store)  # a crash
    again = SingleProcessSQLiteStore(path)
    await again.open()
    try:
        unsettled = [e for e in await again.ledger("acme") if e.status == "unsettled"]
        assert sorted(e.reservation_id for e in unsettled) == ["r0", "r1"]
        assert await state(again, day) == (38 * 5, 0, 10**9)
    finally:
        await again.close()


async def test_reservations_of_one_loop_turn_share_one_journal_write(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "f.db"
    day = hold("tenant:acme:day", 10**9)
    store = SingleProcessSQLiteStore(path)
    await store.open()
    outcomes = await asyncio.gather(
        *(store.reserve(reservation(f"r{i}", 10, [day]), busy=True) for i in range(20))
    )
    assert all(o.ok for o in outcomes)
    assert await state(store, day) == (0, 200, 10**9)
    assert len(path.with_name("f.db-inflight").read_bytes().splitlines()) == 20
    await SQLiteStore.close(store)  # a crash with all twenty in flight
    again = SingleProcessSQLiteStore(path)
    await again.open()
    try:
        unsettled = [e for e in await again.ledger("acme") if e.status == "unsettled"]
        assert len(unsettled) == 20 and await state(again, day) == (0, 0, 10**9)
    finally:
        await again.close()
