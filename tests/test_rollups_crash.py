"""Issue [11], acceptance 1: rollups stay exact through a crash. A real gateway serves a mixed
load (plain chat, streams, upstream failures, embeddings) with budgets on, is SIGKILLed in the
middle of it, and starts again on the same database; once the leases of the requests it was
serving have expired (their placeholders written), every rollup row equals the sums of the
ledger's entries to the last unit, on SQLite and on PostgreSQL (the replicas' store)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from farebox.core.records import LATENCY_BOUNDS_MS
from tests.e2e import create_tenant_key, db_path, free_port, running, serve, write_config
from tests.outage import (
    _fetch,
    _run,
    dsn,
    fresh_databases,
    redis_url,
    require_services,
    scaled_env,
)

KILL_AFTER = 40
LEASE_S = 1.0
PROVIDERS = {
    "sim": {"kind": "mock", "seed": 11, "latency_ms": 200, "tokens_per_second": 500},
    "down": {"kind": "mock", "error_rate": 1.0, "error_status": 503},
}
MODELS = {"gpt-4o-mini": [{"provider": "sim", "model": "gpt-4o-mini"}],
          "text-embedding-3-small": [{"provider": "sim", "model": "text-embedding-3-small"}],
          "broken": [{"provider": "down", "model": "gpt-4o-mini"}]}  # fmt: skip
PLANS = {"pro": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "1000"}]}}
MSGS = [{"role": "user", "content": "rollups through a crash"}]
CALLS = [  # (path, body, stream)
    ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSGS}, False),
    ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSGS, "stream": True}, True),
    ("/v1/chat/completions", {"model": "broken", "messages": MSGS}, False),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}, False),
]
SUMS = ("requests", "errors", "input_tokens", "cached_input_tokens", "cache_write_tokens",
        "output_tokens", "reasoning_tokens", "cost", "revenue", "latency_us",
        "upstream_us")  # fmt: skip
CACHE_SUMS = ("saved", "cache_misses")  # after the latency buckets


@dataclass
class Load:
    kill: Callable[[], None]
    done: dict[int, int] = field(default_factory=dict)  # call kind -> answers received
    stop: bool = False
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self, kind: int) -> None:
        self.done[kind] = self.done.get(kind, 0) + 1
        if sum(self.done.values()) >= KILL_AFTER and len(self.done) == len(CALLS) and not self.stop:
            self.stop = True
            self.kill()  # at once, with the other workers' requests in flight
            self.enough.set()


async def worker(client: httpx.AsyncClient, key: str, kind: int, load: Load) -> None:
    path, body, stream = CALLS[kind]
    headers = {"Authorization": f"Bearer {key}"}
    while not load.stop:
        try:
            if stream:
                async with client.stream("POST", path, json=body, headers=headers) as r:
                    async for _ in r.aiter_lines():
                        pass
            else:
                await client.post(path, json=body, headers=headers)
        except httpx.TransportError:
            continue
        load.answered(kind)


async def drive_until_killed(base_url: str, key: str, pid: int) -> Load:
    load = Load(lambda: os.kill(pid, signal.SIGKILL))
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
        tasks = [asyncio.create_task(worker(client, key, i % len(CALLS), load)) for i in range(24)]
        try:
            await asyncio.wait_for(load.enough.wait(), timeout=60.0)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30.0)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return load


def micros(ms: float) -> int:
    return int(ms * 1000 + 0.5)  # whole microseconds, half up


def expected(ledger: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[int]]:
    """The rollup rows the ledger's entries make, computed here from the definition."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for e in ledger:
        key = (int(e["started_at"] // 3600) * 3600, e["tenant_id"], e["key_id"],
               e["model_served"], e["feature"] or "", e["status"])  # fmt: skip
        row = out.setdefault(key, [0] * (len(SUMS) + len(LATENCY_BOUNDS_MS) + 1 + 2))
        values = [1, e["http_status"] >= 400, e["input_tokens"], e["cached_input_tokens"],
                  e["cache_write_5m_tokens"] + e["cache_write_1h_tokens"], e["output_tokens"],
                  e["reasoning_tokens"], e["cost"], e["revenue"], micros(e["latency_ms"]),
                  micros(e["upstream_ms"])]  # fmt: skip
        for i, v in enumerate(values):
            row[i] += int(v)
        row[len(SUMS) + bisect.bisect_left(LATENCY_BOUNDS_MS, e["latency_ms"])] += 1
        row[-2] += int(e["saved"])
        row[-1] += e["cache"] == "miss"
    return out


def daily(hourly: dict[tuple[Any, ...], list[int]]) -> dict[tuple[Any, ...], list[int]]:
    """The daily rollups (UTC day, tenant, status) the hourly ones add up to."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for (hour, tenant, _key, _model, _feature, status), values in hourly.items():
        row = out.setdefault((hour // 86_400 * 86_400, tenant, status), [0] * len(values))
        for i, v in enumerate(values):
            row[i] += v
    return out


def totals(rows: dict[tuple[Any, ...], list[int]]) -> dict[tuple[Any, ...], list[int]]:
    """Rows (hourly rollups, or the totals' shards) added up per hour and status."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for key, values in rows.items():
        hour, status = key[0], key[5] if len(key) == 6 else key[1]
        row = out.setdefault((hour, status), [0] * len(values))
        for i, v in enumerate(values):
            row[i] += v
    return out


def stored(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple[Any, ...], list[int]]:
    buckets = [f"lb{i}" for i in range(len(LATENCY_BOUNDS_MS) + 1)]
    out = {}
    for r in rows:
        cols = (*SUMS, *buckets, *CACHE_SUMS)
        out[(int(r["hour"]), *(r[c] for c in key))] = [int(r[c]) for c in cols]
    return {k: v for k, v in out.items() if any(v)}  # a placeholder replaced leaves zeros


HOURLY = ("tenant_id", "key_id", "model", "feature", "status")
DAILY = ("tenant_id", "status")
TOTAL = ("status", "shard")


def check(
    ledger: list[dict[str, Any]], rollups: list[dict[str, Any]], days: list[dict[str, Any]],
    hours: list[dict[str, Any]],
) -> None:  # fmt: skip
    statuses = {e["status"] for e in ledger}
    assert {"ok", "error"} <= statuses, statuses
    assert any(e["endpoint"] == "embeddings" for e in ledger), {e["endpoint"] for e in ledger}
    assert any(e["stream"] for e in ledger)
    assert stored(rollups, HOURLY) == expected(ledger)
    assert stored(days, DAILY) == daily(expected(ledger))
    unsharded = totals(stored(hours, TOTAL))  # the shards of an hour and status added up
    assert unsharded == totals(expected(ledger))


def poll(what: str, fn: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def placeholders(ledger: list[dict[str, Any]]) -> bool:
    return any(e["status"] == "unsettled" for e in ledger)


def sqlite_rows(database: Path, table: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]  # noqa: S608


async def test_rollups_equal_the_ledger_after_a_sigkill_on_sqlite(tmp_path: Path) -> None:
    config = write_config(tmp_path, providers=PROVIDERS, models=MODELS, plans=PLANS,
                          budgets={"lease_s": LEASE_S})  # fmt: skip
    database = db_path(tmp_path)
    with serve(config, cwd=tmp_path, port=free_port()) as server:
        key = create_tenant_key(server.base_url, "crashy", "pro")
        await drive_until_killed(server.base_url, key, server.proc.pid)
        server.kill()
        assert server.proc.returncode == -signal.SIGKILL
    with serve(config, cwd=tmp_path, port=free_port()):  # reclaims the leases it finds expired
        poll(
            "the killed requests' placeholders",
            lambda: placeholders(sqlite_rows(database, "ledger")),
        )
        tables = ("ledger", "rollups", "rollups_daily", "rollups_total")
        check(*(sqlite_rows(database, t) for t in tables))
        with contextlib.closing(sqlite3.connect(database)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_rollups_equal_the_ledger_after_a_sigkill_on_postgresql(tmp_path: Path) -> None:
    require_services()
    with fresh_databases(1) as [name]:
        config = write_config(tmp_path, providers=PROVIDERS, models=MODELS, plans=PLANS,
                              database=dsn(name), redis=redis_url(),
                              budgets={"lease_s": LEASE_S})  # fmt: skip
        env = scaled_env()

        def start() -> Any:
            port = free_port()
            args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
            return running(args, cwd=tmp_path, env=env, port=port)

        with start() as server:
            key = create_tenant_key(server.base_url, "crashy", "pro")
            await drive_until_killed(server.base_url, key, server.proc.pid)
            server.kill()
            assert server.proc.returncode == -signal.SIGKILL

        def ledger() -> list[dict[str, Any]]:
            rows = _run(_fetch(name, "SELECT * FROM ledger"))
            for r in rows:
                r["cost"], r["revenue"] = int(r["cost"]), int(r["revenue"])
                r["saved"] = int(r["saved"])
            return rows

        with start():
            poll("the killed requests' placeholders", lambda: placeholders(ledger()))
            hourly, days, hours = (
                _run(_fetch(name, f"SELECT * FROM {t}"))  # noqa: S608
                for t in ("rollups", "rollups_daily", "rollups_total")
            )
            check(ledger(), hourly, days, hours)
