"""Crash safety: SIGKILL the gateway with requests in flight, restart it on the same database.

Every response a client received in full must have exactly one ledger row; nothing is
recorded twice; the database is intact; and the gateway serves again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from tests.e2e import (
    ServerProcess,
    create_tenant_key,
    db_path,
    free_port,
    gpt_4o_mini_cost,
    ledger_row,
    serve,
    usd_to_pico,
    write_config,
)

PLAIN_WORKERS = 50
STREAM_WORKERS = 10
# SIGKILL the server the moment this many responses were received in full: all workers start
# together and answers spread over several hundred milliseconds, so the kill lands in the
# middle of the first wave, while the rest of it is being generated, metered and sent.
KILL_AFTER = 25
MIN_STREAMS = 2  # ...and at least this many of them were streams that reached [DONE]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "crash test"}]}


@dataclass
class Tracker:
    """What the clients saw. Only touched from the event loop, so no locking is needed."""

    kill_after: int
    kill: Callable[[], None]
    started: int = 0
    finished: int = 0
    plain: dict[str, int] = field(default_factory=dict)  # request id -> x-farebox-cost-usd in pico
    streams: list[str] = field(default_factory=list)  # request ids of streams that reached [DONE]
    failures: int = 0
    stop: bool = False
    in_flight_at_kill: int = -1
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def completed(self) -> int:
        return len(self.plain) + len(self.streams)

    def done_one(self) -> None:
        if self.completed >= self.kill_after and len(self.streams) >= MIN_STREAMS and not self.stop:
            self.stop = True
            self.in_flight_at_kill = self.started - self.finished
            self.kill()  # synchronously, before any other response is processed
            self.enough.set()


async def plain_worker(client: httpx.AsyncClient, key: str, t: Tracker) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    while not t.stop:
        t.started += 1
        try:
            r = await client.post("/v1/chat/completions", json=BODY, headers=headers)
            body = r.json()  # the full body arrived and parses
        except (httpx.TransportError, ValueError):
            t.failures += 1
            continue
        finally:
            t.finished += 1
        assert r.status_code == 200, r.text
        assert body["choices"][0]["message"]["content"]
        t.plain[r.headers["x-farebox-request-id"]] = usd_to_pico(r.headers["x-farebox-cost-usd"])
        t.done_one()


async def stream_worker(client: httpx.AsyncClient, key: str, t: Tracker) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    body = {**BODY, "stream": True}
    while not t.stop:
        t.started += 1
        request_id = None
        got_done = False
        try:
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as r:
                assert r.status_code == 200
                request_id = r.headers["x-farebox-request-id"]
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        got_done = True
                    elif line.startswith("data: "):
                        chunk = orjson.loads(line[len("data: ") :])
                        assert "error" not in chunk, chunk
        except httpx.TransportError:
            t.failures += 1
            continue
        finally:
            t.finished += 1
        if got_done:
            t.streams.append(request_id)
            t.done_one()


async def drive_until_killed(server: ServerProcess, key: str) -> Tracker:
    """Run the workers; SIGKILL the server as soon as enough responses were received."""
    t = Tracker(KILL_AFTER, lambda: os.kill(server.proc.pid, signal.SIGKILL))
    limits = httpx.Limits(max_connections=PLAIN_WORKERS + STREAM_WORKERS + 10)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30.0) as client:
        tasks = [asyncio.create_task(plain_worker(client, key, t)) for _ in range(PLAIN_WORKERS)]
        tasks += [asyncio.create_task(stream_worker(client, key, t)) for _ in range(STREAM_WORKERS)]
        waiter = asyncio.create_task(t.enough.wait())
        try:
            done, _ = await asyncio.wait(
                [waiter, *tasks], timeout=30.0, return_when=asyncio.FIRST_COMPLETED
            )
            assert waiter in done, f"only {t.completed} responses completed; {server.output}"
            server.kill()  # reap it
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30.0)
        finally:
            for task in [waiter, *tasks]:
                task.cancel()
            for task in [waiter, *tasks]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return t


def check_ledger(database: Path, t: Tracker) -> None:
    for request_id, header_cost in t.plain.items():
        row = ledger_row(database, request_id)
        assert row["status"] == "ok"
        assert row["tenant_id"] == "crashy"
        assert row["cost"] == header_cost
        assert row["cost"] == gpt_4o_mini_cost(row["input_tokens"], row["output_tokens"])
    for request_id in t.streams:
        row = ledger_row(database, request_id)
        assert row["status"] == "ok"
        assert row["stream"] == 1
        assert row["cost"] == gpt_4o_mini_cost(row["input_tokens"], row["output_tokens"])
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT request_id) FROM ledger"
        ).fetchone()
    assert total == distinct
    assert total >= t.completed


async def test_sigkill_with_requests_in_flight_loses_no_received_response(tmp_path: Path) -> None:
    # 300 ms before the first token, then a lognormal number of tokens at 400 per second:
    # answers spread out over several hundred milliseconds and streams arrive word by word.
    providers = {"sim": {"kind": "mock", "seed": 7, "latency_ms": 300, "tokens_per_second": 400}}
    config = write_config(tmp_path, providers=providers)
    database = db_path(tmp_path)
    port = free_port()
    with serve(config, cwd=tmp_path, port=port) as server:
        key = create_tenant_key(server.base_url, "crashy", "pro")
        t = await drive_until_killed(server, key)
        assert server.proc.returncode == -signal.SIGKILL
    assert t.completed >= KILL_AFTER
    assert t.in_flight_at_kill > 0, "nothing was in flight when the server was killed"
    assert t.failures > 0, "no request was cut off by the kill"
    assert len(t.streams) >= MIN_STREAMS

    with serve(config, cwd=tmp_path, port=free_port()) as server:
        check_ledger(database, t)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
            r = await client.post(
                "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
            )
        assert r.status_code == 200, r.text
        row = ledger_row(database, r.headers["x-farebox-request-id"])
        assert row["cost"] == usd_to_pico(r.headers["x-farebox-cost-usd"])
