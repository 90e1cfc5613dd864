"""Issue 11, acceptance 8: reports beside traffic. Starts ``farebox serve`` on a SQLite file
preloaded with ``--entries`` (1,000,000) ledger entries, all in one month, runs c=64 chat
traffic against it (``bench.load``, the mock upstream of ``python -m bench``) for a baseline
window, then again while ``margins`` and ``reconcile`` for that month run one after another
for the whole window (``--rounds N``: N rounds, then the traffic alone to the window's end;
through the admin API, as the CLI's ``--url`` does; ``--via cli`` runs ``farebox
margins/reconcile --url`` itself). Reports each report's wall time and the
gateway's peak RSS while it ran (``/proc``), the traffic's throughput in both windows, the
loss, and the failed and timed-out requests; checks them against the acceptance (each report
under 1 s and 200 MiB, under 10% throughput lost, no request failed). Not a test.

```
.venv/bin/python -m bench.reports_beside_traffic --entries 20000 --duration 5   # a quick look
.venv/bin/python -m bench.reports_beside_traffic                 # 1M entries, 20 s windows
```

Writes ``bench/results/reports-beside-traffic.json`` (``--output``); exits 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.gateway import CHAT_BODY, SERVER_LINES, Gateway, http
from bench.load import Endpoint, Job, JobResult, LoadWorker
from bench.procs import plan_cpus, rss_mib
from bench.report_data import (
    PreloadedGateway,
    Shape,
    bulk_load,
    log,
    month_range,
    sqlite_store,
    stores_yaml,
)
from bench.run import load_worker, mock_upstream

RESULTS = Path(__file__).parent / "results" / "reports-beside-traffic.json"
REPORT_S, REPORT_MIB, LOSS_PCT = 1.0, 200.0, 10.0  # the acceptance's limits


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.reports_beside_traffic", description=__doc__)
    p.add_argument("--entries", type=int, default=1_000_000, help="ledger entries (1,000,000)")
    p.add_argument("--tenants", type=int, default=500, help="tenants (500)")
    p.add_argument("--month", help="the month the entries fill and the reports ask (last month)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per window (20)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per window (3)")
    p.add_argument("--concurrency", type=int, default=64, help="traffic clients (64)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout s (10)")
    p.add_argument("--mode", choices=("default", "shared", "single"), default="default",
                   help="the gateway's SQLite mode, as python -m bench --mode")  # fmt: skip
    p.add_argument("--via", choices=("api", "cli"), default="api", help="how reports are asked")
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="margins+reconcile rounds in the window (0: back to back, the strictest)",
    )
    p.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning")
    p.add_argument("--keep-tmp", action="store_true", help="keep the gateway's dir and log")
    p.add_argument("--output", help=f"JSON results (default {RESULTS})")
    return p


def preloader(shape: Shape) -> Callable[[Path], None]:
    """Loads the gateway's SQLite file in its directory (``bench.report_data``'s fast load)."""

    def preload(directory: Path) -> None:
        path = directory / "farebox.db"
        log(f"loading {shape.entries:,} entries of {shape.tenants:,} tenants into {path}")
        seconds, check = asyncio.run(bulk_load(lambda: sqlite_store(path), shape, 50_000, log))
        log(f"  loaded in {seconds:,.1f} s")
        for line in check:
            log(f"  {line}")

    return preload


@dataclasses.dataclass
class ReportRun:
    name: str
    wall_s: float
    status: str
    rss_before_mib: float
    rss_peak_mib: float


class RssPeak:
    """Samples the gateway's RSS every few milliseconds in a thread; ``peak`` since reset."""

    def __init__(self, pid: int, every_s: float = 0.01) -> None:
        self._pid, self._every = pid, every_s
        self._peak = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rss-peak", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            now = rss_mib(self._pid)
            with self._lock:
                self._peak = max(self._peak, now)

    def reset(self) -> float:
        now = rss_mib(self._pid)
        with self._lock:
            self._peak = now
        return now

    @property
    def peak(self) -> float:
        with self._lock:
            return self._peak

    @contextlib.contextmanager
    def running(self) -> Iterator[RssPeak]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def ask_report(gw: Gateway, name: str, month: str, via: str) -> str:
    """One report, as an admin asks it; 'ok' or what went wrong."""
    if via == "cli":
        command = "margins" if name == "margins" else "reconcile"
        cmd = [
            sys.executable,
            "-m",
            "farebox",
            command,
            "--month",
            month,
            "--url",
            gw.url,
            "--json",
        ]
        env = {**os.environ, "FAREBOX_ADMIN_KEY": gw.admin_key, "NO_PROXY": "127.0.0.1"}
        done = subprocess.run(cmd, capture_output=True, timeout=600, env=env, check=False)
        return "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-300:]!r}"
    path = "/admin/v1/margins" if name == "margins" else "/admin/v1/reconciliation"
    answer = http("GET", f"{gw.url}{path}?month={month}", key=gw.admin_key, timeout_s=600)
    return "ok" if answer.status == 200 else f"HTTP {answer.status}: {answer.body[:300]!r}"


def reports_while(
    loader: LoadWorker, job: Job, gw: Gateway, opts: argparse.Namespace, month: str, rss: RssPeak
) -> tuple[JobResult, list[ReportRun]]:
    """Run ``job``; once its warm-up is over, margins then reconcile, ``opts.rounds`` times or
    (0) again and again until the traffic stops."""
    loader.submit(job)
    time.sleep(job.warmup_s)
    runs: list[ReportRun] = []
    result, rounds = None, 0
    while result is None and (opts.rounds == 0 or rounds < opts.rounds):
        rounds += 1
        for name in ("margins", "reconcile"):
            before = rss.reset()
            began = time.perf_counter()
            status = ask_report(gw, name, month, opts.via)
            wall = time.perf_counter() - began
            runs.append(ReportRun(name, wall, status, before, max(rss.peak, before)))
            log(f"  {name}: {wall * 1000:,.0f} ms, {status}, RSS peak {rss.peak:,.0f} MiB")
        result = loader.poll(0.0)
    if result is None:
        result = loader.poll(job.max_seconds())
    if result is None:
        raise TimeoutError("the traffic beside the reports did not finish")
    return result, runs


def traffic_json(result: JobResult) -> dict[str, Any]:
    # ``errors`` counts every request that did not get its 200: other statuses, connection
    # errors and timeouts (``TimeoutError``), each by kind in ``error_kinds``
    return {"rps": round(result.rps, 1), "ok": result.ok, "failed": result.errors,
            "timed_out": result.error_kinds.get("TimeoutError", 0), "statuses": result.statuses,
            "error_kinds": result.error_kinds, "p50_ms": result.latency.p50_ms,
            "p99_ms": result.latency.p99_ms, "first_error": result.first_error}  # fmt: skip


def verdicts(base: dict[str, Any], loaded: dict[str, Any], runs: list[ReportRun]) -> list[str]:
    loss = 100.0 * (1 - loaded["rps"] / base["rps"]) if base["rps"] else 100.0
    out = []
    for name in ("margins", "reconcile"):
        mine = [r for r in runs if r.name == name]
        if not mine:
            out.append(f"FAIL {name}: never ran")
            continue
        worst = max(r.wall_s for r in mine)
        rise = max(r.rss_peak_mib - r.rss_before_mib for r in mine)
        bad = [r.status for r in mine if r.status != "ok"]
        out.append(f"{'PASS' if worst < REPORT_S and not bad else 'FAIL'} {name}: "
                   f"{len(mine)} runs, wall max {worst * 1000:,.0f} ms (< {REPORT_S * 1000:.0f})"
                   f"{', errors: ' + bad[0] if bad else ''}")  # fmt: skip
        out.append(f"{'PASS' if rise < REPORT_MIB else 'FAIL'} {name}: gateway RSS rise max "
                   f"{rise:,.1f} MiB (< {REPORT_MIB:.0f})")  # fmt: skip
    out.append(f"{'PASS' if loss < LOSS_PCT else 'FAIL'} traffic: {base['rps']:,.0f} -> "
               f"{loaded['rps']:,.0f} req/s, {loss:.1f}% lost (< {LOSS_PCT:.0f}%)")  # fmt: skip
    out.append(f"{'PASS' if loaded['failed'] == 0 else 'FAIL'} traffic: {loaded['failed']} "
               f"failed, {loaded['timed_out']} timed out beside the reports (baseline: "
               f"{base['failed']} failed)")  # fmt: skip
    return out


def measure(opts: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    month, start, end = month_range(opts.month)
    plan = plan_cpus(opts.pin, 1, external_gateway=False)
    upstream, key = mock_upstream(plan, stack)
    loader = load_worker(plan, stack)
    shape = Shape(opts.tenants, opts.entries, start, end)
    mode = SERVER_LINES[opts.mode]

    def stores(directory: Path) -> str:
        return stores_yaml(directory / "farebox.db", None, "") + mode

    gw = PreloadedGateway(preloader(shape), stores, upstream.base_url, key, 1, plan.gateway,
                          opts.keep_tmp, opts.mode)  # fmt: skip
    stack.callback(gw.stop)
    gw.start()
    assert gw.proc is not None
    log(f"gateway on {gw.url} (pid {gw.proc.pid}, log {gw.log_path}); {gw.mode_line()}")
    ep = Endpoint.from_url(gw.url)
    request = ep.request("/chat/completions", json.dumps(CHAT_BODY).encode(), gw.provision_key())
    job = Job("c64", ep.host, ep.port, request, concurrency=opts.concurrency,
              duration_s=opts.duration, warmup_s=opts.warmup, timeout_s=opts.timeout)  # fmt: skip
    log(f"baseline: c={opts.concurrency}, {opts.duration:g} s")
    base = traffic_json(loader.run(job))
    log(f"  {base['rps']:,.0f} req/s, {base['failed']} failed")
    log(f"beside the reports ({opts.via}) for {month}")
    with RssPeak(gw.proc.pid).running() as rss:
        result, runs = reports_while(loader, job, gw, opts, month, rss)
    loaded = traffic_json(result)
    return {"month": month, "entries": opts.entries, "concurrency": opts.concurrency,
            "tenants": opts.tenants, "via": opts.via, "rounds": opts.rounds or "back to back",
            "gateway_mode": gw.mode_line(), "pinning": plan.describe(), "baseline": base,
            "beside_reports": loaded, "reports": [dataclasses.asdict(r) for r in runs],
            "verdicts": verdicts(base, loaded, runs)}  # fmt: skip


def render(doc: dict[str, Any]) -> str:
    lines = [f"\nreports beside c={doc['concurrency']} traffic: "
             f"{doc['entries']:,} entries, month {doc['month']}, via {doc['via']}, "
             f"reports {doc['rounds']}"]  # fmt: skip
    for name in ("margins", "reconcile"):
        walls = [r["wall_s"] * 1000 for r in doc["reports"] if r["name"] == name]
        peaks = [r["rss_peak_mib"] for r in doc["reports"] if r["name"] == name]
        if walls:
            lines.append(f"  {name:<10} runs {len(walls):>3}  wall median "
                         f"{statistics.median(walls):>8,.0f} ms  max {max(walls):>8,.0f} ms  "
                         f"gateway RSS peak {max(peaks):>7,.0f} MiB")  # fmt: skip
    for window in ("baseline", "beside_reports"):
        t = doc[window]
        lines.append(f"  traffic {window:<15} {t['rps']:>9,.0f} req/s  p50 {t['p50_ms']:.2f} ms"
                     f"  p99 {t['p99_ms']:.2f} ms  failed {t['failed']}  timed out "
                     f"{t['timed_out']}")  # fmt: skip
    lines += ["", *doc["verdicts"]]
    return "\n".join(lines)


def main() -> int:
    opts = parser().parse_args()
    with contextlib.ExitStack() as stack:
        doc = measure(opts, stack)
    print(render(doc))
    path = Path(opts.output) if opts.output else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nresults written to {path}")
    return 1 if any(v.startswith("FAIL") for v in doc["verdicts"]) else 0


if __name__ == "__main__":
    sys.exit(main())
