"""Latency summaries: nearest-rank percentiles over nanosecond samples."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    """A latency distribution in milliseconds."""

    count: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def percentile(sorted_ns: list[int], pct: float) -> float:
    """Nearest-rank percentile of pre-sorted samples, in milliseconds."""
    if not sorted_ns:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


def summarize(samples_ns: list[int]) -> Latency:
    ordered = sorted(samples_ns)
    if not ordered:
        return Latency(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    return Latency(
        count=len(ordered),
        min_ms=ordered[0] / 1e6,
        p50_ms=percentile(ordered, 50),
        p90_ms=percentile(ordered, 90),
        p99_ms=percentile(ordered, 99),
        max_ms=ordered[-1] / 1e6,
        mean_ms=sum(ordered) / len(ordered) / 1e6,
    )
