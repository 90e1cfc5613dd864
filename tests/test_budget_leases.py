"""Acceptance: a replica that dies holding budget reservations does not pin the budget.

Two ``farebox serve`` replicas share one SQLite database. Replica A's upstream is slow, so
requests sent to it hold their reservations; while they do, replica B refuses the tenant
with a 429. A is SIGKILLed; within a few lease periods B reclaims the holds, records each
one as an ``unsettled`` ledger entry (listed by ``GET /admin/v1/unsettled``), and serves the
tenant again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

from farebox.core.money import parse_usd
from tests.e2e import (
    POLL_INTERVAL_S,
    ServerProcess,
    admin_headers,
    child_env,
    create_tenant_key,
    db_path,
    free_port,
    ledger_rows,
    running,
    write_config,
)

LEASE_S = 3.0
LIMIT = "0.01"
HELD = 3  # requests A holds when it dies
# gpt-4o output is USD 10 per 1M tokens: 400 tokens reserve about USD 0.004, so two requests
# fit whole and the third is clamped to what is left, which leaves less than 16 tokens' worth
CHAT = {
    "model": "gpt-4o",
    "max_tokens": 400,
    "messages": [{"role": "user", "content": "hold this reservation"}],
}
TOO_LITTLE = 16 * 10_000_000  # 16 gpt-4o output tokens: less than the smallest admissible
PLANS = {"p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": LIMIT}]}}


def replica_config(directory: Path, database: Path, latency_ms: int) -> Path:
    directory.mkdir()
    mock = {"kind": "mock", "seed": 7, "latency_ms": latency_ms}
    return write_config(
        directory,
        providers={"sim": mock},
        plans=PLANS,
        database=f"sqlite:///{database}",
        budgets={"lease_s": LEASE_S, "wait_for_room_s": 0},
        # two gateways on one database: the shared mode, asked for (a plain config would run
        # the first one single-process, and the second would be refused)
        server={"single_process": False},
    )


def serve_args(config: Path, port: int) -> list[str]:
    return ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]


def poll(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Call ``check`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL_INTERVAL_S)  # polling interval, the deadline bounds the wait
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def budget(admin: httpx.Client, server: ServerProcess) -> dict[str, Any]:
    r = admin.get(f"{server.base_url}/admin/v1/tenants/t/budgets")
    assert r.status_code == 200, r.text
    [only] = r.json()["data"]
    return dict(only)


def test_dead_replica_holds_are_reclaimed_by_the_survivor(tmp_path: Path) -> None:
    database = db_path(tmp_path)
    slow = replica_config(tmp_path / "a", database, latency_ms=30_000)
    fast = replica_config(tmp_path / "b", database, latency_ms=0)
    port_a, port_b = free_port(), free_port()
    env = child_env()
    with (
        running(serve_args(fast, port_b), cwd=tmp_path, env=env, port=port_b) as b,
        running(serve_args(slow, port_a), cwd=tmp_path, env=env, port=port_a) as a,
        httpx.Client(headers=admin_headers(), timeout=10.0) as admin,
        ThreadPoolExecutor(max_workers=HELD) as pool,
    ):
        key = create_tenant_key(b.base_url, "t", "p")
        auth = {"Authorization": f"Bearer {key}"}

        def held_request() -> Exception | httpx.Response:
            try:
                return httpx.post(
                    f"{a.base_url}/v1/chat/completions", json=CHAT, headers=auth, timeout=60.0
                )
            except httpx.TransportError as exc:
                return exc

        pending = [pool.submit(held_request) for _ in range(HELD)]
        # every request holds its reservation while A waits on its slow upstream
        held = poll(
            "A's requests hold the whole budget",
            lambda: parse_usd((s := budget(admin, b))["remaining_usd"]) < TOO_LITTLE and s,
            timeout=10.0,
        )
        assert held["used_usd"] == "0.00"
        reserved = parse_usd(held["reserved_usd"])
        assert reserved <= parse_usd(LIMIT)
        assert budget(admin, a) == held  # both replicas see the same counters
        assert not any(f.done() for f in pending), "A answered before its upstream did"

        # the holds pin the budget on the other replica too
        blocked = httpx.post(f"{b.base_url}/v1/chat/completions", json=CHAT, headers=auth)
        assert blocked.status_code == 429, blocked.text
        assert blocked.json()["error"]["code"] == "budget_exceeded"

        # leases are renewed while A lives: still held after more than one lease period
        renewed_until = time.monotonic() + 1.5 * LEASE_S
        while time.monotonic() < renewed_until:
            assert parse_usd(budget(admin, b)["reserved_usd"]) == reserved
            time.sleep(0.25)  # sampling interval while A keeps renewing

        a.kill()
        killed_at = time.monotonic()
        for future in pending:
            outcome = future.result(timeout=10)
            assert isinstance(outcome, httpx.TransportError), outcome

        released = poll(
            "B reclaims the dead replica's holds",
            lambda: (s := budget(admin, b))["reserved_usd"] == "0.00" and s,
            timeout=4 * LEASE_S,
        )
        reclaim_s = time.monotonic() - killed_at
        assert released["used_usd"] == "0.00"
        assert released["remaining_usd"] == LIMIT

        r = admin.get(f"{b.base_url}/admin/v1/unsettled", params={"tenant": "t"})
        assert r.status_code == 200, r.text
        unsettled = r.json()["data"]
        assert len(unsettled) == HELD, unsettled
        assert all(u["tenant"] == "t" and u["reservation_id"] for u in unsettled)
        assert sum(parse_usd(u["reserved_usd"]) for u in unsettled) == reserved
        assert len({u["reservation_id"] for u in unsettled}) == HELD

        rows = ledger_rows(database, "tenant_id = ? AND status = 'unsettled'", ("t",))
        assert len(rows) == HELD
        assert {r["reservation_id"] for r in rows} == {u["reservation_id"] for u in unsettled}
        assert {r["request_id"] for r in rows} == {u["request_id"] for u in unsettled}
        for row in rows:
            assert row["cost"] == 0
            assert row["error_code"] == "lease_expired"
            metadata = orjson.loads(row["metadata"])
            assert parse_usd(metadata["reserved_usd"]) > 0

        # the tenant can spend again, through the survivor
        again = httpx.post(f"{b.base_url}/v1/chat/completions", json=CHAT, headers=auth)
        assert again.status_code == 200, again.text
        assert parse_usd(again.headers["x-farebox-cost-usd"]) > 0
        after = budget(admin, b)
        assert after["reserved_usd"] == "0.00"
        assert parse_usd(after["used_usd"]) == parse_usd(again.headers["x-farebox-cost-usd"])
    assert reclaim_s <= 4 * LEASE_S
