"""Budget checks (DESIGN.md section 7), the plain-text table, and the JSON results file."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import JobResult
from bench.procs import CpuPlan

ADDED_P50_MS = 0.5
MIN_RPS = 3000.0
STREAM_ADDED_MS = 1.0
RESPONSES_SLACK_MS = 0.05  # issue 10: the Responses path adds at most this much more than chat
MEMORY_SLACK_MIB = 4.0
MEMORY_SLACK_FRACTION = 0.05
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass
class Results:
    """Everything one run measured; missing parts stay None."""

    meta: dict[str, Any]
    plan: CpuPlan = field(default_factory=lambda: CpuPlan(None, None))
    direct: dict[str, JobResult] = field(default_factory=dict)
    gateway: dict[str, JobResult] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    probes: dict[str, str] = field(default_factory=dict)
    gateway_error: str | None = None
    skip_gateway: bool = False


@dataclass(frozen=True)
class Check:
    name: str
    measured: str
    budget: str
    status: str  # PASS, FAIL or SKIP


def _missing(results: Results, name: str, budget: str) -> Check:
    status = "SKIP" if results.skip_gateway else "FAIL"
    reason = "not measured" if results.skip_gateway else "gateway not measured"
    return Check(name, reason, budget, status)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def added(results: Results, job: str, metric: str, direct_job: str = "") -> float | None:
    direct, gateway = results.direct.get(direct_job or job), results.gateway.get(job)
    if direct is None or gateway is None or gateway.ok == 0:
        return None
    value: float = getattr(gateway, metric).p50_ms - getattr(direct, metric).p50_ms
    return value


def check_latency(results: Results) -> Check:
    name, budget = "added latency p50, c=1", f"<= {ADDED_P50_MS} ms"
    value = added(results, "c1", "latency")
    if value is None:
        return _missing(results, name, budget)
    return Check(name, f"{value:.3f} ms", budget, _verdict(value <= ADDED_P50_MS))


def check_responses(results: Results) -> Check:
    """Issue 10: the Responses API adds at most 0.05 ms p50 at c=1 more than chat does."""
    name, budget = "Responses API added p50 - chat's, c=1", f"<= {RESPONSES_SLACK_MS} ms"
    chat, value = added(results, "c1", "latency"), added(results, "responses", "latency", "c1")
    if chat is None or value is None:
        return _missing(results, name, budget)
    diff = value - chat
    ok = diff <= RESPONSES_SLACK_MS
    return Check(name, f"{diff:+.3f} ms ({value:.3f} vs {chat:.3f})", budget, _verdict(ok))


def check_throughput(results: Results) -> Check:
    name, budget = "gateway throughput, c=64", f">= {MIN_RPS:.0f} req/s"
    job = results.gateway.get("c64")
    if job is None:
        return _missing(results, name, budget)
    return Check(name, f"{job.rps:.0f} req/s", budget, _verdict(job.rps >= MIN_RPS))


def check_errors(results: Results) -> Check:
    name, budget = "errors during c=64 load", "== 0"
    job = results.gateway.get("c64")
    if job is None:
        return _missing(results, name, budget)
    return Check(name, str(job.errors), budget, _verdict(job.errors == 0 and job.ok > 0))


def check_stream(results: Results) -> Check:
    name, budget = "stream first byte added, p50, c=1", f"<= {STREAM_ADDED_MS} ms"
    value = added(results, "stream", "ttfb")
    if value is None:
        return _missing(results, name, budget)
    return Check(name, f"{value:.3f} ms", budget, _verdict(value <= STREAM_ADDED_MS))


def memory_growth(samples: list[tuple[float, float]]) -> float | None:
    """RSS growth over the second half of the sampled load, in MiB."""
    if len(samples) < 2:
        return None
    end_t = samples[-1][0]
    middle = min(samples, key=lambda s: abs(s[0] - end_t / 2))
    return samples[-1][1] - middle[1]


def check_memory(results: Results) -> Check:
    name = "RSS growth, 2nd half of c=64 load"
    growth = memory_growth(results.rss_samples)
    if growth is None:
        return _missing(results, name, f"<= {MEMORY_SLACK_MIB} MiB")
    base = results.rss_samples[-1][1] - growth
    limit = max(MEMORY_SLACK_MIB, MEMORY_SLACK_FRACTION * base)
    return Check(name, f"{growth:+.1f} MiB", f"<= {limit:.1f} MiB", _verdict(growth <= limit))


def checks(results: Results) -> list[Check]:
    return [
        check_latency(results),
        check_responses(results),
        check_throughput(results),
        check_errors(results),
        check_stream(results),
        check_memory(results),
    ]


# --- text -----------------------------------------------------------------------------

ROWS: list[tuple[str, str, str, str]] = [
    ("c=1 latency p50 (ms)", "c1", "latency", "p50_ms"),
    ("c=1 latency p99 (ms)", "c1", "latency", "p99_ms"),
    ("c=1 req/s", "c1", "", "rps"),
    ("c=1 p50, gateway on own CPU (ms)", "c1-split", "latency", "p50_ms"),
    ("c=1 p99, gateway on own CPU (ms)", "c1-split", "latency", "p99_ms"),
    ("c=1 Responses API latency p50 (ms)", "responses", "latency", "p50_ms"),
    ("stream c=1 first byte p50 (ms)", "stream", "ttfb", "p50_ms"),
    ("stream c=1 first byte p99 (ms)", "stream", "ttfb", "p99_ms"),
    ("stream c=1 last byte p50 (ms)", "stream", "latency", "p50_ms"),
    ("c=64 req/s", "c64", "", "rps"),
    ("c=64 latency p50 (ms)", "c64", "latency", "p50_ms"),
    ("c=64 latency p99 (ms)", "c64", "latency", "p99_ms"),
    ("c=64 errors", "c64", "", "errors"),
]


def _value(job: JobResult | None, group: str, attr: str) -> float | None:
    if job is None:
        return None
    source = getattr(job, group) if group else job
    value = getattr(source, attr)
    return None if isinstance(value, float) and math.isnan(value) else float(value)


def _fmt(value: float | None, attr: str) -> str:
    if value is None:
        return "-"
    if attr in ("rps", "errors"):
        return f"{value:.0f}"
    return f"{value:.3f}"


def _row(results: Results, label: str, job: str, group: str, attr: str) -> str:
    if job not in results.gateway and job not in results.direct:
        return ""
    direct = _value(results.direct.get(job.removesuffix("-split")), group, attr)
    gateway = _value(results.gateway.get(job), group, attr)
    diff = None if direct is None or gateway is None else gateway - direct
    if attr == "rps" and diff is not None:
        diff = None
    cells = (_fmt(direct, attr), _fmt(gateway, attr), _fmt(diff, attr))
    return f"{label:<34}{cells[0]:>12}{cells[1]:>12}{cells[2]:>12}"


def render(results: Results, verdicts: list[Check]) -> str:
    meta = results.meta
    lines = [
        f"Farebox bench: {meta['cpus']} CPUs, {meta['loop']}, {meta['pinning']}"
        + _guardrails(meta),
        f"{'':<34}{'direct':>12}{'gateway':>12}{'added':>12}",
    ]
    lines += [line for line in (_row(results, *row) for row in ROWS) if line]
    lines += _rss_lines(results)
    lines += _problem_lines(results)
    lines += ["", f"{'Budget (DESIGN.md section 7)':<38}{'measured':>22}{'budget':>16}  result"]
    lines += [f"{c.name:<38}{c.measured:>22}{c.budget:>16}  {c.status}" for c in verdicts]
    return "\n".join(lines)


def _guardrails(meta: dict[str, Any]) -> str:
    mode = meta.get("options", {}).get("guardrails")
    return f", guardrails {mode} (200-char message)" if mode else ""


def _rss_lines(results: Results) -> list[str]:
    if not results.rss_mib:
        return []
    parts = ", ".join(f"{k} {v:.1f}" for k, v in results.rss_mib.items())
    return ["", f"gateway RSS (MiB): {parts}"]


def _problem_lines(results: Results) -> list[str]:
    lines = []
    if results.gateway_error:
        lines += ["", "gateway: " + results.gateway_error]
    bad = {k: v for k, v in results.probes.items() if v != "ok"}
    lines += [f"probe {k}: {v}" for k, v in bad.items()]
    for name, job in results.gateway.items():
        if job.errors:
            lines.append(
                f"gateway {name}: {job.errors} errors {job.error_kinds}; {job.first_error}"
            )
    return lines


# --- JSON -----------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as null and keys as strings (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def to_json(results: Results, verdicts: list[Check]) -> dict[str, Any]:
    doc = {
        "meta": results.meta,
        "direct": {k: dataclasses.asdict(v) for k, v in results.direct.items()},
        "gateway": {k: dataclasses.asdict(v) for k, v in results.gateway.items()},
        "added_ms": {
            "c1_latency_p50": added(results, "c1", "latency"),
            "c1_latency_p50_gateway_own_cpu": added(results, "c1-split", "latency", "c1"),
            "stream_ttfb_p50": added(results, "stream", "ttfb"),
            "responses_latency_p50": added(results, "responses", "latency", "c1"),
        },
        "rss_mib": results.rss_mib,
        "rss_samples": results.rss_samples,
        "probes": results.probes,
        "gateway_error": results.gateway_error,
        "checks": [dataclasses.asdict(c) for c in verdicts],
    }
    cleaned: dict[str, Any] = json_safe(doc)
    return cleaned


def write_json(doc: dict[str, Any], path: Path = RESULTS_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
