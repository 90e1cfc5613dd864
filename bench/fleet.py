"""The fleet bench (``python -m bench fleet`` or ``python -m bench.fleet``): issue 18, in one run.

On 127.0.0.1 it starts the mock upstream and the load generator, measures the upstream
directly, then measures side by side, each against the same upstream with the same plan and
the same tenants' keys (round-robin):

1. ``embedded``: a plain ``farebox serve`` on SQLite (default settings, one worker);
2. ``pg+redis xN``: N = 1, 2, 3 replicas (one ``farebox serve`` process each) sharing a
   PostgreSQL database of the bench's own and a ``redis-server`` of its own;
3. ``pg+redis-cluster xN``: the same against a 3-node Redis Cluster (``bench.redis_cluster``).

For each: c=1 latency, c=1 stream first byte, c=64 throughput and latency (clients spread over
the replicas by connection), errors, and the Redis CPU per request in the c=64 window (delta of
``used_cpu_sys + used_cpu_user`` over all nodes / requests served). A row that cannot start is
reported as ``n/a (reason)``. Everything is stopped, the database dropped and the temporary
directories removed on the way out, also on Ctrl-C or a failed start.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import fleet_report as report
from bench import redis_cluster
from bench.fleet_config import Backend
from bench.fleet_replicas import Fleet, fleet, provision
from bench.fleet_services import (
    RedisCpu,
    ServiceError,
    postgres_database,
    postgres_status,
    redis_server,
)
from bench.gateway import CHAT_BODY, STREAM_BODY, GatewayError, probe
from bench.load import Endpoint, Job, JobResult, LoadWorker
from bench.procs import loop_name
from bench.report import write_json
from bench.run import _exit_on_sigterm, log
from bench.upstream import Upstream, UpstreamOptions

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FleetOptions:
    replicas: tuple[int, ...]
    tenants: int
    duration: float
    warmup_duration: float
    requests: int
    stream_requests: int
    warmup_requests: int
    concurrency: int
    timeout: float
    embedded: bool
    single_redis: bool
    cluster: bool
    global_lease_s: float | None
    output: str | None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench fleet",
        description="Embedded vs PostgreSQL + Redis replicas (single Redis and a 3-node "
        "cluster), side by side in one run, against the mock upstream.",
    )
    p.add_argument("--replicas", default="1,2,3", help="replica counts to measure (1,2,3)")
    p.add_argument("--tenants", type=int, default=100, help="tenants, one key each (100)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of c=64 load (5)")
    p.add_argument("--warmup-duration", type=float, default=1.0, help="c=64 warm-up s (1)")
    p.add_argument("--requests", type=int, default=1000, help="c=1 requests (1000)")
    p.add_argument("--stream-requests", type=int, default=300, help="c=1 streams (300)")
    p.add_argument("--warmup-requests", type=int, default=100, help="c=1 warm-up (100)")
    p.add_argument("--concurrency", type=int, default=64, help="clients in the load (64)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout s (10)")
    p.add_argument("--no-embedded", dest="embedded", action="store_false")
    p.add_argument("--no-single-redis", dest="single_redis", action="store_false")
    p.add_argument("--no-cluster", dest="cluster", action="store_false")
    p.add_argument(
        "--global-lease-s",
        type=float,
        help="add a global budget to the plan, leased by each replica this many seconds of "
        "spend at a time (budgets.global_lease_s; 0: held in Redis per request)",
    )
    p.add_argument("--output", help="JSON path (default bench/results/fleet-latest.json)")
    return p


def parse(argv: list[str]) -> FleetOptions:
    p = parser()
    args = p.parse_args(argv)
    try:
        counts = tuple(sorted({int(part) for part in args.replicas.split(",") if part.strip()}))
    except ValueError:
        p.error(f"--replicas: expected counts like 1,2,3 (got {args.replicas!r})")
    if not counts or counts[0] < 1:
        p.error("--replicas: counts must be at least 1")
    if min(args.tenants, args.requests, args.stream_requests, args.concurrency) < 1:
        p.error("--tenants, --requests, --stream-requests and --concurrency must be positive")
    return FleetOptions(**(vars(args) | {"replicas": counts}))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        return run(parse(args), " ".join(["python -m bench fleet", *map(shlex.quote, args)]))
    except KeyboardInterrupt:
        log("interrupted: everything the bench started is stopped, its database dropped")
        return 130


# --- one run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """What every measurement needs: options, the load generator, the upstream."""

    opts: FleetOptions
    loader: LoadWorker
    upstream_url: str
    upstream_key: str

    @property
    def upstream(self) -> tuple[str, str]:
        return self.upstream_url, self.upstream_key


def run(opts: FleetOptions, command: str) -> int:
    _exit_on_sigterm()
    results = report.FleetResults(meta=_meta(opts, command))
    with contextlib.ExitStack() as stack:
        bench = _start(opts, stack)
        results.direct = _direct(bench)
        if opts.embedded:
            results.rows.append(_embedded(bench))
        if opts.single_redis or opts.cluster:
            results.rows += _scaled(bench, results.meta)
    results.meta["loadavg_at_end"] = list(os.getloadavg())
    verdicts = report.checks(results)
    print(report.render(results, verdicts))
    path = write_json(
        report.to_json(results, verdicts), Path(opts.output) if opts.output else report.RESULTS_PATH
    )
    print(f"\nresults written to {path}\ncommand: {command}")
    failed = any(c.status != "PASS" for c in verdicts)
    return 1 if failed else 0


def _start(opts: FleetOptions, stack: contextlib.ExitStack) -> Bench:
    key = "sk-bench-" + secrets.token_hex(8)
    upstream = Upstream(UpstreamOptions(api_key=key))
    stack.callback(upstream.stop)
    upstream.start()
    log(f"mock upstream on {upstream.base_url} (pid {upstream.pid})")
    loader = LoadWorker().start()
    stack.callback(loader.stop)
    return Bench(opts, loader, upstream.base_url, key)


def _meta(opts: FleetOptions, command: str) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "git": _git_describe(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(cpus),
        "loop": loop_name(),
        "pinning": f"not pinned (gateways, Redis, PostgreSQL, upstream and load generator "
        f"share CPUs {cpus})",
        "loadavg_at_start": list(os.getloadavg()),
        "tenants": opts.tenants,
        "options": dataclasses.asdict(opts),
    }


def _git_describe() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return done.stdout.strip() or None
    return None


# --- jobs -------------------------------------------------------------------------------


def _job(
    bench: Bench, name: str, ports: list[int], keys: list[str | None], body: dict[str, Any]
) -> Job:
    """A job whose client i talks to ports[i % len] and rotates over the keys."""
    data = json.dumps(body).encode()
    ep = Endpoint("127.0.0.1", ports[0], "/v1")
    rotate = tuple(ep.request("/chat/completions", data, key) for key in keys)
    return Job(
        name, ep.host, ep.port, rotate[0], timeout_s=bench.opts.timeout,
        ports=tuple(ports), rotate=rotate,
    )  # fmt: skip


def _run(bench: Bench, job: Job, side: str) -> JobResult:
    extent = f"{job.duration_s:g}s" if job.duration_s else f"{job.requests} requests"
    log(f"{side} {job.name}: c={job.concurrency} {extent}")
    result = bench.loader.run(job)
    log(f"  -> {result.rps:.0f} req/s, p50 {result.latency.p50_ms:.3f} ms, errors {result.errors}")
    return result


def _sequential(bench: Bench, job: Job) -> Job:
    count = bench.opts.stream_requests if job.name == "stream" else bench.opts.requests
    return dataclasses.replace(job, requests=count, warmup_requests=bench.opts.warmup_requests)


def _loaded(bench: Bench, job: Job, duration_s: float) -> Job:
    return dataclasses.replace(job, concurrency=bench.opts.concurrency, duration_s=duration_s)


def _direct(bench: Bench) -> dict[str, JobResult]:
    port = Endpoint.from_url(bench.upstream_url).port
    out = {}
    for name, body in (("c1", CHAT_BODY), ("stream", STREAM_BODY)):
        job = _job(bench, name, [port], [bench.upstream_key], body)
        out[name] = _run(bench, _sequential(bench, job), "direct")
    job = _job(bench, "c64", [port], [bench.upstream_key], CHAT_BODY)
    _run(bench, _loaded(bench, job, bench.opts.warmup_duration), "direct warm-up")
    out["c64"] = _run(bench, _loaded(bench, job, bench.opts.duration), "direct")
    return out


def _measure(
    bench: Bench, row: report.Row, ports: list[int], keys: list[str], cpu: RedisCpu | None
) -> None:
    """c=1, stream and c=64 through the replicas on ``ports``; Redis CPU around each window."""
    side = row.name
    for name, body in (("c1", CHAT_BODY), ("stream", STREAM_BODY)):
        job = _sequential(bench, _job(bench, name, ports, list(keys), body))
        with _cpu_window(row, name, cpu):
            row.jobs[name] = _run(bench, job, side)
    job = _job(bench, "c64", ports, list(keys), CHAT_BODY)
    _run(bench, _loaded(bench, job, bench.opts.warmup_duration), side + " warm-up")
    with _cpu_window(row, "c64", cpu):
        row.jobs["c64"] = _run(bench, _loaded(bench, job, bench.opts.duration), side)
    if cpu is not None:
        row.redis_keys = cpu.keys()


@contextlib.contextmanager
def _cpu_window(row: report.Row, name: str, cpu: RedisCpu | None) -> Iterator[None]:
    if cpu is None:
        yield
        return
    before, calls = cpu.sample(), cpu.calls()
    yield
    after, calls_after = cpu.sample(), cpu.calls()
    row.redis_cpu_s[name] = [a - b for a, b in zip(after, before, strict=True)]
    row.redis_calls[name] = {
        k: v - calls.get(k, 0) for k, v in calls_after.items() if v > calls.get(k, 0)
    }


def _probe(url: str, key: str) -> str | None:
    """Why chat or stream does not work through ``url``, or None."""
    found = probe(url, key)
    bad = {k: v for k, v in found.items() if k in ("chat", "stream") and v != "ok"}
    return "; ".join(f"{k}: {v}" for k, v in bad.items()) or None


# --- the rows ---------------------------------------------------------------------------


def _embedded(bench: Bench) -> report.Row:
    row = report.Row("embedded (sqlite)", "embedded", 1)
    with fleet(Backend(global_lease_s=bench.opts.global_lease_s), bench.upstream) as group:
        try:
            replica = group.add()
            keys = provision(replica.url, group.admin_key, bench.opts.tenants)
        except GatewayError as err:
            row.error = f"did not start: {err}"
            log(row.error)
            return row
        log(f"embedded gateway on {replica.url} (pid {replica.pid})")
        row.error = _probe(replica.url, keys[0])
        if row.error is None:
            _measure(bench, row, [replica.port], keys, None)
    return row


def _scaled(bench: Bench, meta: dict[str, Any]) -> list[report.Row]:
    opts = bench.opts
    modes = [m for m, on in (("redis", opts.single_redis), ("cluster", opts.cluster)) if on]
    try:
        with postgres_database() as database:
            meta["postgres"] = postgres_status(database)
            log(f"PostgreSQL database {database.rsplit('/', 1)[-1]}: {meta['postgres']}")
            return [row for mode in modes for row in _series(bench, mode, database)]
    except ServiceError as err:
        return [_na(mode, n, f"PostgreSQL: {err}") for mode in modes for n in opts.replicas]


def _na(mode: str, replicas: int, reason: str) -> report.Row:
    row = report.Row(_name(mode, replicas), mode, replicas)
    row.error = reason
    return row


def _name(mode: str, replicas: int) -> str:
    return f"pg+redis{'-cluster' if mode == 'cluster' else ''} x{replicas}"


@contextlib.contextmanager
def _redis(mode: str) -> Iterator[list[int]]:
    if mode == "cluster":
        with redis_cluster.redis_cluster(3) as ports:
            yield ports
    else:
        with redis_server() as port:
            yield [port]


def _series(bench: Bench, mode: str, database: str) -> list[report.Row]:
    """Start 1, 2, 3 replicas on one Redis (or cluster), measuring at each requested count."""
    with contextlib.ExitStack() as stack:
        try:
            ports = stack.enter_context(_redis(mode))
        except (ServiceError, RuntimeError) as err:
            log(f"{mode}: {err}")
            return [_na(mode, n, f"Redis: {err}") for n in bench.opts.replicas]
        log(f"{mode}: Redis on ports {ports}")
        url = f"redis://127.0.0.1:{ports[0]}"
        backend = Backend(database, url, mode == "cluster", bench.opts.global_lease_s)
        group = stack.enter_context(fleet(backend, bench.upstream))
        return _grow(bench, mode, group, RedisCpu(ports))
    raise AssertionError("unreachable")


def _grow(bench: Bench, mode: str, group: Fleet, cpu: RedisCpu) -> list[report.Row]:
    rows: list[report.Row] = []
    keys: list[str] = []
    counts = bench.opts.replicas
    for count in range(1, counts[-1] + 1):
        try:
            replica = group.add()
            log(f"{_name(mode, count)}: replica on {replica.url} (pid {replica.pid})")
            keys = keys or provision(replica.url, group.admin_key, bench.opts.tenants)
            problem = _probe(replica.url, keys[0])
        except GatewayError as err:
            problem = f"replica {count} did not start: {err}"
        if problem:
            log(f"{_name(mode, count)}: {problem}")
            return rows + [_na(mode, n, problem) for n in counts if n >= count]
        if count in counts:
            row = report.Row(_name(mode, count), mode, count)
            _measure(bench, row, [r.port for r in group.replicas], keys, cpu)
            rows.append(row)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
