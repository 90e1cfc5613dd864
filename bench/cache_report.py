"""The cache bench's budgets (issue 12 acceptance 6, DESIGN.md section 7), table and JSON."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import JobResult
from bench.report import Check, json_safe, write_json

HIT_P50_MS = 0.3  # an exact hit answered, p50 total at c=1
MISS_ADDED_MS = 0.05  # what the exact cache adds to a miss, p50
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "cache-latest.json"
INFO = "INFO"

__all__ = ["RESULTS_PATH", "CacheResults", "checks", "render", "to_json", "write_json"]


@dataclass
class CacheResults:
    """Everything one run measured; missing parts stay empty."""

    meta: dict[str, Any]
    jobs: dict[str, JobResult] = field(default_factory=dict)
    rounds: dict[str, list[JobResult]] = field(default_factory=dict)  # plan -> c=1 miss runs
    probes: dict[str, str] = field(default_factory=dict)
    mix_stats: dict[str, Any] = field(default_factory=dict)
    memory_stats: dict[str, Any] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def median(self, plan: str, attr: str) -> float | None:
        """The median over ``plan``'s miss runs of each run's ``attr`` (``p50_ms``, ...)."""
        values = [getattr(r.latency, attr) for r in self.rounds.get(plan, []) if r.ok]
        return statistics.median(values) if values else None

    def added(self, plan: str, attr: str) -> float | None:
        mine, off = self.median(plan, attr), self.median("off", attr)
        return None if mine is None or off is None else mine - off

    def mix_hit_rate(self) -> str | None:
        """The c=64 mix's hits / requests, from the ledger's entries before and after."""
        before, after = self.mix_stats.get("ledger_before"), self.mix_stats.get("ledger_after")
        if before is None or after is None:
            return None
        hits = after.get("cache_hit", 0) - before.get("cache_hit", 0)
        total = sum(after.values()) - sum(before.values())
        return f"{hits / total:.1%} of {total}" if total else None

    def memory_per_10k(self) -> float | None:
        """MiB per 10,000 entries: RSS growth over the exact fill less that over the off fill
        (each of ``entries`` requests), scaled to 10,000."""
        rss, entries = self.rss_mib, int(self.meta["options"]["entries"])
        needed = ("after warm", "after off", "after exact")
        if not all(k in rss for k in needed):
            return None
        cached = rss["after exact"] - rss["after off"]
        requests = rss["after off"] - rss["after warm"]
        return (cached - requests) * 10_000 / entries

    def store_bytes_per_entry(self) -> float | None:
        stats = self.memory_stats
        if not stats or not stats.get("entries"):
            return None
        return float(stats["bytes"]) / float(stats["entries"])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def _limit(name: str, value: float | None, budget: float) -> Check:
    if value is None:
        return Check(name, "not measured", f"<= {budget} ms", "FAIL")
    return Check(name, _ms(value), f"<= {budget} ms", "PASS" if value <= budget else "FAIL")


def checks(r: CacheResults) -> list[Check]:
    hit = r.jobs.get("hit-c1")
    mix = next((j for n, j in r.jobs.items() if n.endswith("-mix")), None)
    sem50, sem99 = r.median("semantic", "p50_ms"), r.median("semantic", "p99_ms")
    memory, per_entry = r.memory_per_10k(), r.store_bytes_per_entry()
    out = [
        _limit("exact hit, p50 total, c=1", hit.latency.p50_ms if hit else None, HIT_P50_MS),
        _limit("exact cache on a miss, added p50", r.added("exact", "p50_ms"), MISS_ADDED_MS),
        Check("semantic miss, p50 / p99 total", f"{_ms(sem50)} / {_ms(sem99)}", "report", INFO),
        Check(
            "semantic lookup, added p50 / p99",
            f"{_ms(r.added('semantic', 'p50_ms'))} / {_ms(r.added('semantic', 'p99_ms'))}",
            "report",
            INFO,
        ),  # fmt: skip
    ]
    if mix is None:
        out.append(Check("c=64, 50% hits", "not measured", "errors == 0", "FAIL"))
    else:
        ok = mix.errors == 0 and mix.ok > 0
        out.append(Check("c=64, 50% hits", f"{mix.rps:.0f} req/s, {mix.errors} errors",
                         "errors == 0", "PASS" if ok else "FAIL"))  # fmt: skip
    out.append(Check("c=64 mix hit rate (ledger)", r.mix_hit_rate() or "-", "about 50%", INFO))
    mem = "-" if memory is None else f"{memory:.1f} MiB RSS"
    if per_entry is not None:
        mem += f", store {per_entry:.0f} B/entry"
    out.append(Check("memory per 10,000 entries", mem, "report", INFO))
    return out


ROWS = (
    ("exact hit, c=1", "hit-c1"),
    ("c=64, cache off, all new", "load-offload"),
    ("c=64, exact, 50% hits", "load-mix"),
)


def _line(label: str, job: JobResult) -> str:
    lat = job.latency
    return (f"{label:<34}{lat.p50_ms:>10.3f}{lat.p99_ms:>10.3f}{job.rps:>10.0f}"
            f"{job.errors:>8}")  # fmt: skip


def render(r: CacheResults, verdicts: list[Check]) -> str:
    meta = r.meta
    lines = [
        f"Farebox cache bench: {meta['cpus']} CPUs, {meta['loop']}, {meta['pinning']}",
        f"load average before {meta.get('load_average_before')}, after "
        f"{meta.get('load_average_after')} (other work on the machine moves every number)",
        f"{'':<34}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'errors':>8}",
    ]
    lines += [_line(label, r.jobs[name]) for label, name in ROWS if name in r.jobs]
    for plan in ("off", "exact", "semantic"):
        runs = r.rounds.get(plan, [])
        if runs:
            p50s = " ".join(f"{j.latency.p50_ms:.3f}" for j in runs)
            lines.append(f"c=1 misses, {plan:<9} p50 per run (ms): {p50s}")
    if r.rss_mib:
        lines.append(
            "gateway RSS (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in r.rss_mib.items())
        )
    if r.probes:
        lines.append("probes: " + ", ".join(f"{k}: {v}" for k, v in r.probes.items()))
    if r.error:
        lines += ["", "error: " + r.error]
    lines += ["", f"{'Budget (issue 12, acceptance 6)':<36}{'measured':>36}{'budget':>14}  result"]
    lines += [f"{c.name:<36}{c.measured:>36}{c.budget:>14}  {c.status}" for c in verdicts]
    return "\n".join(lines)


def to_json(r: CacheResults, verdicts: list[Check]) -> dict[str, Any]:
    doc = {
        "meta": r.meta,
        "jobs": {k: dataclasses.asdict(v) for k, v in r.jobs.items()},
        "miss_p50_ms_per_run": {
            plan: [j.latency.p50_ms for j in runs] for plan, runs in r.rounds.items()
        },
        "added_ms": {
            "exact_miss_p50": r.added("exact", "p50_ms"),
            "semantic_miss_p50": r.added("semantic", "p50_ms"),
            "semantic_miss_p99": r.added("semantic", "p99_ms"),
        },
        "mix_stats": r.mix_stats,
        "memory": {
            "mib_per_10k_entries": r.memory_per_10k(),
            "store_bytes_per_entry": r.store_bytes_per_entry(),
            "stats": r.memory_stats,
        },
        "rss_mib": r.rss_mib,
        "probes": r.probes,
        "error": r.error,
        "checks": [dataclasses.asdict(c) for c in verdicts],
    }
    cleaned: dict[str, Any] = json_safe(doc)
    return cleaned
