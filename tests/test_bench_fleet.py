"""Issue [9] (issue 18), acceptance 1, 2, 6: the fleet bench's plumbing (``python -m bench fleet``).

Not a performance test (numbers come from running the bench by hand): it runs the fleet bench
with tiny counts, the embedded gateway and one replica on PostgreSQL + a redis-server of the
bench's own, and checks the side-by-side table has its rows, every request was answered, Redis
CPU was measured, and nothing the bench started is left behind. It needs PostgreSQL on
127.0.0.1:5432 and the redis-server program: it skips without them, and fails instead with
FAREBOX_REQUIRE_SERVICES=1 (CI). The load generator's spreading over replicas and keys is
checked in process, without services.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from bench.fleet_report import FleetResults, Row, checks, render
from bench.load import Endpoint, Job, JobResult, run_job
from bench.stats import Latency

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--replicas", "1", "--no-cluster", "--tenants", "3", "--requests", "30",
    "--stream-requests", "10", "--warmup-requests", "5", "--duration", "0.5",
    "--warmup-duration", "0.2", "--concurrency", "8",
]  # fmt: skip


def _services_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "the redis-server program is not installed"
    with socket.socket() as sock:
        sock.settimeout(1.0)
        if sock.connect_ex(("127.0.0.1", 5432)) != 0:
            return "PostgreSQL is not running on 127.0.0.1:5432"
    return None


def _require_services() -> None:
    missing = _services_missing()
    if missing:
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


def _leftover_databases() -> set[str]:
    import asyncpg

    async def names() -> set[str]:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'farebox_bench_%'"
            )
        finally:
            await conn.close()
        return {row["datname"] for row in rows}

    return asyncio.run(names())


def _marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (what the bench run started)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ:
                found.append(int(entry.name))
    return found


def test_fleet_bench_tiny_run_has_every_row_and_no_errors(tmp_path: Path) -> None:
    _require_services()
    before = _leftover_databases()
    output = tmp_path / "fleet.json"
    env = dict(os.environ)
    marker = f"BENCH_FLEET_TEST_RUN={uuid.uuid4().hex}"
    env["BENCH_FLEET_TEST_RUN"] = marker.split("=", 1)[1]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "fleet", *TINY, "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a budget line failed
    table = done.stdout
    assert "embedded (sqlite)" in table and "pg+redis x1" in table, table
    assert "n/a" not in table.split("Acceptance")[0], table
    assert "command: python -m bench fleet --replicas 1" in table
    doc = json.loads(output.read_text())
    rows = {row["name"]: row for row in doc["rows"]}
    assert set(rows) == {"embedded (sqlite)", "pg+redis x1"}
    for row in rows.values():
        assert row["error"] is None and row["errors"] == 0, row
        assert row["rps_c64"] > 0 and row["added_ms"]["c1_p50"] is not None
        assert {job["ok"] for job in row["jobs"].values()} >= {30}
    assert rows["pg+redis x1"]["redis_cpu_us_per_request"]["c64"] > 0
    assert {c["row"] for c in doc["checks"]} == set(rows)
    assert _leftover_databases() == before  # its database dropped
    assert _marked(marker) == []  # every process the run started is gone with it


def test_row_that_cannot_start_is_reported_not_a_crash() -> None:
    row = Row("pg+redis-cluster x1", "cluster", 1, error="replica 1 did not start: bad config")
    results = FleetResults(meta={"cpus": 2, "loop": "uvloop", "pinning": "-", "tenants": 1})
    results.rows.append(row)
    text = render(results, [])
    assert "pg+redis-cluster x1" in text and "n/a (replica 1 did not start" in text


async def _counting_server(seen: Counter[tuple[int, bytes]]) -> asyncio.Server:
    """Answers every request with 200; counts connections as (port, b"") and requests by key."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        seen[(port, b"")] += 1
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            key = head.split(b"Authorization: Bearer ")[1].split(b"\r\n")[0]
            seen[(port, key)] += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(guarded, "127.0.0.1", 0)


async def test_load_spreads_clients_over_ports_and_requests_over_keys() -> None:
    seen: Counter[tuple[int, bytes]] = Counter()
    servers = [await _counting_server(seen) for _ in range(2)]
    try:
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        keys = [f"k{i}" for i in range(5)]
        ep = Endpoint("127.0.0.1", ports[0], "/v1")
        rotate = tuple(ep.request("/x", b"{}", key) for key in keys)
        job = Job("spread", "127.0.0.1", ports[0], rotate[0], concurrency=4, requests=40,
                  ports=tuple(ports), rotate=rotate)  # fmt: skip
        result = await run_job(job)
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
    assert result.ok == 40 and result.errors == 0
    connections = {port: seen[(port, b"")] for port in ports}
    assert connections == {ports[0]: 2, ports[1]: 2}  # clients 0 and 2, 1 and 3
    by_key: Counter[bytes] = Counter()
    for (_, key), count in seen.items():
        if key:
            by_key[key] += count
    assert set(by_key) == {k.encode() for k in keys}  # every client rotates over the keys
    assert sum(by_key.values()) == 40


def _job(name: str, ok: int, rps: float, p50: float, ttfb: float = 0.0) -> JobResult:
    lat = Latency(ok, p50, p50, p50, p50, p50, p50)
    first = Latency(ok, ttfb, ttfb, ttfb, ttfb, ttfb, ttfb)
    return JobResult(name, 64, ok, 0, 1.0, rps, lat, first, {200: ok}, {}, None)


def test_checks_compare_each_scaled_row_with_the_embedded_one() -> None:
    direct = {"c1": _job("c1", 10, 1.0, 0.0), "stream": _job("stream", 10, 1.0, 0.0, 0.0),
              "c64": _job("c64", 10, 1.0, 1.0)}  # fmt: skip
    embedded = Row("embedded (sqlite)", "embedded", 1)
    embedded.jobs = {"c1": _job("c1", 10, 1.0, 0.4), "stream": _job("stream", 10, 1.0, 0.4, 0.5),
                     "c64": _job("c64", 3000, 3000.0, 11.0)}  # fmt: skip
    slow = Row("pg+redis-cluster x1", "cluster", 1, redis_keys=[9, 0, 0])
    slow.jobs = {"c1": _job("c1", 10, 1.0, 2.0), "stream": _job("stream", 10, 1.0, 2.0, 1.5),
                 "c64": _job("c64", 1000, 1499.0, 22.0)}  # fmt: skip
    slow.redis_cpu_s = {"c64": [0.05, 0.0, 0.0]}  # 50 us per request of the 1000
    fast = Row("pg+redis-cluster x2", "cluster", 2, redis_keys=[3, 3, 3])
    fast.jobs = dict(slow.jobs) | {"c64": _job("c64", 1000, 1500.0, 21.0)}
    fast.redis_cpu_s = {"c64": [0.04, 0.04, 0.04]}  # 120 us
    results = FleetResults(meta={}, direct=direct, rows=[embedded, slow, fast])
    verdicts = {(c.row, c.name): c.status for c in checks(results)}
    assert verdicts[("embedded (sqlite)", "added p50, c=1")] == "PASS"
    assert verdicts[("embedded (sqlite)", "RPS, c=64")] == "PASS"
    assert verdicts[("pg+redis-cluster x1", "RPS c=64 >= half embedded")] == "FAIL"
    assert verdicts[("pg+redis-cluster x2", "RPS c=64 >= half embedded")] == "PASS"
    assert verdicts[("pg+redis-cluster x1", "added p50 c=64 <= 2x embedded")] == "FAIL"  # 21 > 20
    assert verdicts[("pg+redis-cluster x2", "added p50 c=64 <= 2x embedded")] == "PASS"  # 20
    assert verdicts[("pg+redis-cluster x1", "stream first byte added p50")] == "FAIL"
    assert verdicts[("pg+redis-cluster x1", "Redis CPU per request")] == "PASS"
    assert verdicts[("pg+redis-cluster x2", "Redis CPU per request")] == "FAIL"
    assert verdicts[("pg+redis-cluster x1", "Redis keys on every cluster node")] == "FAIL"
    assert verdicts[("pg+redis-cluster x2", "Redis keys on every cluster node")] == "PASS"
