"""The soak's verdict: the RSS slope over the last two thirds, the checks, the text summary and
the JSON results file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Check

MAX_SLOPE_MIB_PER_MIN = 0.1
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "soak-latest.json"


def slope_per_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, MiB)`` points, in MiB per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60.0


@dataclass(frozen=True)
class Memory:
    """RSS over the run and its slope over the window (the last two thirds)."""

    window_from_s: float
    points: int
    slope: float | None
    start: float
    end: float
    peak: float

    def to_json(self) -> dict[str, Any]:
        slope = None if self.slope is None else round(self.slope, 4)
        return {
            "window_from_s": round(self.window_from_s, 1),
            "points_in_window": self.points,
            "slope_mib_per_min": slope,
            "start_mib": round(self.start, 2),
            "end_mib": round(self.end, 2),
            "peak_mib": round(self.peak, 2),
        }


def memory(samples: list[dict[str, Any]], duration_s: float) -> Memory:
    """The window starts a third of the way in: for 30 minutes, the last 20."""
    window_from = duration_s / 3.0
    rss = [(float(s["t_s"]), float(s["rss_mib"])) for s in samples]
    window = [(t, v) for t, v in rss if t >= window_from]
    values = [v for _, v in rss] or [0.0]
    slope = slope_per_min(window)
    return Memory(window_from, len(window), slope, values[0], values[-1], max(values))


def _status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def checks(doc: dict[str, Any]) -> list[Check]:
    """Every check of one soak, from its JSON document."""
    mem, traffic, post = doc["memory"], doc["traffic"], doc["after"]
    slope = mem["slope_mib_per_min"]
    result = [
        Check(
            "RSS slope over the last two thirds",
            "not enough samples" if slope is None else f"{slope:.4f} MiB/min",
            f"< {MAX_SLOPE_MIB_PER_MIN} MiB/min",
            "FAIL" if slope is None else _status(slope < MAX_SLOPE_MIB_PER_MIN),
        ),
        _count_check("no 5xx but the deliberate ones", doc["unexpected_5xx"], "0"),
        _count_check("every answer one its kind allows", sum(traffic["unexpected"].values()), "0"),
        _count_check("no request timed out", doc["timeouts"], "0"),
        Check(
            "gateway alive until stopped",
            "running" if doc["gateway_exit_code"] is None else f"exited {doc['gateway_exit_code']}",
            "running",
            _status(doc["gateway_exit_code"] is None),
        ),
    ]
    refused, served = doc["churn"].get("revoked_refused", 0), doc["churn"].get("revoked_served", 0)
    result.append(
        Check(
            "revoked keys refused (401)",
            f"{refused} refused, {served} not",
            "all refused, at least one",
            _status(served == 0 and refused > 0),
        )
    )
    result.extend(_after_checks(post))
    return result


def _count_check(name: str, value: int, budget: str) -> Check:
    return Check(name, str(value), budget, _status(value == 0))


def _after_checks(post: dict[str, Any]) -> list[Check]:
    settle, unsettled, slots = post["settle"], post["unsettled"], post["slots"]
    held = {t: v for t, v in settle["held"].items() if v != []}
    return [
        Check(
            "no reservation held after traffic (/v1/me reserved_usd)",
            "0 everywhere" if settle["clear"] else json.dumps(held)[:200],
            f"0, within {post['settle_s']:g} s",
            _status(bool(settle["clear"])),
        ),
        Check(
            "no unsettled ledger entry",
            str(unsettled.get("count", unsettled.get("error"))),
            "0",
            _status(unsettled.get("count") == 0),
        ),
        Check(
            "concurrency slots free after traffic",
            " ".join(slots["outcomes"]),
            "all 200",
            _status(bool(slots["ok"])),
        ),
    ]


def render(doc: dict[str, Any], verdicts: list[Check]) -> str:
    mem, traffic = doc["memory"], doc["traffic"]
    lines = [
        f"soak: {doc['duration_s']:.0f} s of traffic, {traffic['total']} requests"
        + (" (interrupted)" if doc["interrupted"] else ""),
        f"RSS: start {mem['start_mib']} MiB, end {mem['end_mib']} MiB, peak {mem['peak_mib']} MiB;"
        f" slope from t={mem['window_from_s']:.0f}s ({mem['points_in_window']} samples):"
        f" {mem['slope_mib_per_min']} MiB/min",
        "",
        f"{'kind':<18} answers",
    ]
    for kind, counts in traffic["counts"].items():
        lines.append(f"{kind:<18} " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if traffic["unexpected"]:
        lines += ["", "unexpected answers (kind/shape/outcome: count):"]
        lines += [f"  {k}: {v}" for k, v in list(traffic["unexpected"].items())[:30]]
    lines += ["", f"gateway log: {doc['tracebacks']} tracebacks"]
    stalls = doc.get("stalls") or []
    if stalls:
        longest = max(s["late_s"] for s in stalls)
        lines.append(
            f"the soak itself stalled {len(stalls)} times (longest {longest:.0f} s): the host "
            "was overloaded then, and RSS samples around those times are suspect"
        )
    lines.append("")
    width = max(len(c.name) for c in verdicts)
    for c in verdicts:
        lines.append(f"{c.status:<5} {c.name:<{width}}  {c.measured}  (budget {c.budget})")
    lines.append("")
    lines.append("SOAK " + doc["verdict"])
    return "\n".join(lines)


def write_json(doc: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path
