"""The fleet bench's rows, its acceptance checks, the side-by-side table and the JSON file."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import JobResult
from bench.report import ADDED_P50_MS, MIN_RPS, STREAM_ADDED_MS, json_safe

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "fleet-latest.json"
REDIS_CPU_US = 100.0  # issue 18 acceptance 2: Redis CPU per request
SCALED_RPS_FRACTION = 0.5  # acceptance 1: the scaled mode serves at least half the embedded RPS
SCALED_P50_FACTOR = 2.0  # acceptance 1: its added p50 at c=64 at most twice the embedded one


@dataclass
class Row:
    """One configuration: embedded, or N replicas on PostgreSQL + Redis (or a cluster)."""

    name: str
    mode: str  # embedded, redis, cluster
    replicas: int
    jobs: dict[str, JobResult] = field(default_factory=dict)
    redis_cpu_s: dict[str, list[float]] = field(default_factory=dict)  # window -> per node
    redis_keys: list[int] = field(default_factory=list)
    redis_calls: dict[str, dict[str, int]] = field(default_factory=dict)  # window -> command
    error: str | None = None  # why the row is n/a

    def added(self, direct: dict[str, JobResult], job: str, metric: str, pct: str) -> float | None:
        mine, base = self.jobs.get(job), direct.get(job)
        if mine is None or base is None or mine.ok == 0:
            return None
        value = getattr(getattr(mine, metric), pct) - getattr(getattr(base, metric), pct)
        return None if math.isnan(value) else float(value)

    def rps(self) -> float | None:
        job = self.jobs.get("c64")
        return job.rps if job is not None and job.ok else None

    def errors(self) -> int:
        return sum(job.errors for job in self.jobs.values())

    def redis_us(self, window: str = "c64") -> float | None:
        """Redis CPU (all nodes) per request served in ``window``, in microseconds."""
        cpu, job = self.redis_cpu_s.get(window), self.jobs.get(window)
        if cpu is None or job is None or job.ok == 0:
            return None
        return sum(cpu) / job.ok * 1e6

    def calls_per_request(self, window: str = "c64") -> dict[str, float]:
        calls, job = self.redis_calls.get(window), self.jobs.get(window)
        if not calls or job is None or job.ok == 0:
            return {}
        ranked = sorted(calls.items(), key=lambda item: -item[1])
        return {name: round(count / job.ok, 3) for name, count in ranked}


@dataclass
class FleetResults:
    meta: dict[str, Any]
    direct: dict[str, JobResult] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def embedded(self) -> Row | None:
        return next((r for r in self.rows if r.mode == "embedded" and not r.error), None)


@dataclass(frozen=True)
class Check:
    row: str
    name: str
    measured: str
    budget: str
    status: str  # PASS, FAIL, n/a


# --- checks -----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def _limit(row: Row, name: str, value: float | None, budget: float, unit: str) -> Check:
    measured = "-" if value is None else (f"{value:.0f} {unit}" if unit else f"{value:.3f} ms")
    verdict = "n/a" if value is None else ("PASS" if value <= budget else "FAIL")
    shown = f"<= {budget:.0f} {unit}" if unit else f"<= {budget:.3f} ms"
    return Check(row.name, name, measured, shown, verdict)


def _floor(row: Row, name: str, value: float | None, floor: float) -> Check:
    measured = "-" if value is None else f"{value:.0f} req/s"
    verdict = "n/a" if value is None else ("PASS" if value >= floor else "FAIL")
    return Check(row.name, name, measured, f">= {floor:.0f} req/s", verdict)


def _errors(row: Row) -> Check:
    ok = bool(row.jobs) and row.errors() == 0
    return Check(row.name, "errors", str(row.errors()), "== 0", "PASS" if ok else "FAIL")


def _embedded_checks(row: Row, direct: dict[str, JobResult]) -> list[Check]:
    return [
        _limit(row, "added p50, c=1", row.added(direct, "c1", "latency", "p50_ms"),
               ADDED_P50_MS, ""),
        _floor(row, "RPS, c=64", row.rps(), MIN_RPS),
        _limit(row, "stream first byte added p50", row.added(direct, "stream", "ttfb", "p50_ms"),
               STREAM_ADDED_MS, ""),
        _errors(row),
    ]  # fmt: skip


def _scaled_checks(row: Row, direct: dict[str, JobResult], base: Row | None) -> list[Check]:
    base_rps = base.rps() if base else None
    base_p50 = base.added(direct, "c64", "latency", "p50_ms") if base else None
    checks = []
    if base_rps is None:
        checks.append(Check(row.name, "RPS c=64 vs embedded", "-", "embedded n/a", "n/a"))
    else:
        checks.append(_floor(row, "RPS c=64 >= half embedded", row.rps(),
                             SCALED_RPS_FRACTION * base_rps))  # fmt: skip
    mine = row.added(direct, "c64", "latency", "p50_ms")
    if base_p50 is None:
        checks.append(Check(row.name, "added p50 c=64 vs embedded", _ms(mine), "-", "n/a"))
    else:
        limit = SCALED_P50_FACTOR * max(base_p50, 0.0)
        checks.append(_limit(row, "added p50 c=64 <= 2x embedded", mine, limit, ""))
    ttfb = row.added(direct, "stream", "ttfb", "p50_ms")
    checks.append(_limit(row, "stream first byte added p50", ttfb, STREAM_ADDED_MS, ""))
    checks.append(_limit(row, "Redis CPU per request", row.redis_us(), REDIS_CPU_US, "us"))
    if row.mode == "cluster":
        checks.append(_spread(row))
    checks.append(_errors(row))
    return checks


def _spread(row: Row) -> Check:
    """DESIGN.md section 7: keys spread over a Redis Cluster by tenant (every node has some)."""
    used = sum(1 for count in row.redis_keys if count > 0)
    nodes = len(row.redis_keys)
    verdict = "PASS" if nodes and used == nodes else "FAIL"
    return Check(
        row.name, "Redis keys on every cluster node", f"{used}/{nodes} nodes", "all", verdict
    )


def checks(results: FleetResults) -> list[Check]:
    out: list[Check] = []
    base = results.embedded()
    for row in results.rows:
        if row.error:
            out.append(Check(row.name, "started and measured", "n/a", "-", "n/a"))
        elif row.mode == "embedded":
            out += _embedded_checks(row, results.direct)
        else:
            out += _scaled_checks(row, results.direct, base)
    return out


# --- the table --------------------------------------------------------------------------

COLUMNS = [
    ("RPS c=64", 9),
    ("add p50 c64", 12),
    ("add p99 c64", 12),
    ("add p50 c=1", 12),
    ("add p99 c=1", 12),
    ("stream 1st B", 13),
    ("Redis us/req", 13),
    ("errors", 7),
]
NAME_WIDTH = 26


def _cells(row: Row, direct: dict[str, JobResult]) -> list[str]:
    def ms(job: str, metric: str, pct: str) -> str:
        value = row.added(direct, job, metric, pct)
        return "-" if value is None else f"{value:.3f}"

    rps, redis = row.rps(), row.redis_us()
    return [
        "-" if rps is None else f"{rps:.0f}",
        ms("c64", "latency", "p50_ms"),
        ms("c64", "latency", "p99_ms"),
        ms("c1", "latency", "p50_ms"),
        ms("c1", "latency", "p99_ms"),
        ms("stream", "ttfb", "p50_ms"),
        "-" if redis is None else f"{redis:.0f}",
        str(row.errors()),
    ]


def table(results: FleetResults) -> list[str]:
    head = f"{'':<{NAME_WIDTH}}" + "".join(f"{name:>{width}}" for name, width in COLUMNS)
    lines = [head]
    for row in results.rows:
        if row.error:
            reason = row.error if len(row.error) <= 160 else row.error[:157] + "..."
            lines.append(f"{row.name:<{NAME_WIDTH}}  n/a ({reason})")
            continue
        cells = zip(_cells(row, results.direct), COLUMNS, strict=True)
        lines.append(f"{row.name:<{NAME_WIDTH}}" + "".join(f"{c:>{w}}" for c, (_, w) in cells))
    return lines


def _direct_line(results: FleetResults) -> str:
    parts = []
    for name, job in results.direct.items():
        metric = job.ttfb if name == "stream" else job.latency
        what = "first byte" if name == "stream" else "p50"
        rps = f", {job.rps:.0f} req/s" if name == "c64" else ""
        parts.append(f"{name} {what} {metric.p50_ms:.3f} ms{rps}")
    return "direct to the mock upstream: " + "; ".join(parts)


def _load_line(meta: dict[str, Any]) -> str:
    def avg(key: str) -> str:
        values = meta.get(key)
        return "/".join(f"{v:.2f}" for v in values) if values else "-"

    line = f"load average (1/5/15 min) at start {avg('loadavg_at_start')}, at end " + avg(
        "loadavg_at_end"
    )
    pg = meta.get("postgres")
    if isinstance(pg, dict) and "max_connections" in pg:
        line += (
            f"; PostgreSQL {pg['version']}: {pg['connections_in_use']} of "
            f"{pg['max_connections']} connections in use before the replicas, "
            f"synchronous_commit {pg['synchronous_commit']}"
        )
    return line


def _notes(results: FleetResults) -> list[str]:
    lines = []
    for row in results.rows:
        cpu = row.redis_cpu_s.get("c64")
        if row.mode == "cluster" and cpu and sum(cpu) > 0:
            shares = "/".join(f"{100 * c / sum(cpu):.0f}%" for c in cpu)
            lines.append(f"{row.name}: Redis CPU by node {shares}; keys by node {row.redis_keys}")
        per_request = row.calls_per_request()
        if per_request and row.replicas == 1:
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(per_request.items())[:8])
            lines.append(
                f"{row.name}: Redis calls per request (c=64, scripts' own included): {top}"
            )
        for name, job in row.jobs.items():
            if job.errors:
                lines.append(f"{row.name} {name}: {job.errors} errors {job.error_kinds}; "
                             f"{job.first_error}")  # fmt: skip
    return lines


def render(results: FleetResults, verdicts: list[Check]) -> str:
    meta = results.meta
    lines = [
        f"Farebox fleet bench: {meta['cpus']} CPUs, {meta['loop']}, {meta['pinning']}",
        f"{meta['tenants']} tenants' keys round-robin, the same plan for each; c=64 load spread "
        "over the replicas by connection; latencies are added ms over the direct upstream",
        _direct_line(results),
        _load_line(meta),
        "",
        *table(results),
    ]
    notes = _notes(results)
    lines += ["", *notes] if notes else []
    lines += ["", f"{'Acceptance (issue 18; DESIGN.md section 7)':<62}{'measured':>14}"
              f"{'budget':>18}  result"]  # fmt: skip
    lines += [
        f"{c.row + ': ' + c.name:<62}{c.measured:>14}{c.budget:>18}  {c.status}" for c in verdicts
    ]
    return "\n".join(lines)


# --- JSON -------------------------------------------------------------------------------


def _row_json(row: Row, direct: dict[str, JobResult]) -> dict[str, Any]:
    return {
        "name": row.name,
        "mode": row.mode,
        "replicas": row.replicas,
        "error": row.error,
        "rps_c64": row.rps(),
        "added_ms": {
            "c64_p50": row.added(direct, "c64", "latency", "p50_ms"),
            "c64_p99": row.added(direct, "c64", "latency", "p99_ms"),
            "c1_p50": row.added(direct, "c1", "latency", "p50_ms"),
            "c1_p99": row.added(direct, "c1", "latency", "p99_ms"),
            "stream_ttfb_p50": row.added(direct, "stream", "ttfb", "p50_ms"),
        },
        "redis_cpu_us_per_request": {w: row.redis_us(w) for w in row.redis_cpu_s},
        "redis_cpu_s_by_node": row.redis_cpu_s,
        "redis_keys_by_node": row.redis_keys,
        "redis_calls_per_request": {w: row.calls_per_request(w) for w in row.redis_calls},
        "errors": row.errors(),
        "jobs": {k: dataclasses.asdict(v) for k, v in row.jobs.items()},
    }


def to_json(results: FleetResults, verdicts: list[Check]) -> dict[str, Any]:
    doc = {
        "meta": results.meta,
        "direct": {k: dataclasses.asdict(v) for k, v in results.direct.items()},
        "rows": [_row_json(row, results.direct) for row in results.rows],
        "checks": [dataclasses.asdict(c) for c in verdicts],
    }
    cleaned: dict[str, Any] = json_safe(doc)
    return cleaned
