"""Anomaly detection on per-tenant and per-key traffic: pure, integer arithmetic.

Traffic is counted in rows of (tenant, key, start, requests, spend): minute rows for the
recent window, hour rows for the history. A subject (a tenant, or one of its keys) is
anomalous when its rate over the recent window, projected to an hour, exceeds its baseline
by more than ``threshold_pct`` percent, on requests or on spend, and is at least the minimum
absolute volume. The baseline is the largest of:

- a floor, so that a small or new tenant's noise is never a page;
- the ``quantile_pct`` percentile, over the trailing ``history_days``, of this hour of the
  day (the hour either side included), on days of the same kind (weekday or weekend) when
  there are at least three of them: so ordinary daily and weekly peaks are normal;
- the busiest of the last ``recent_hours`` complete hours: so growth (an onboarding ramp)
  is measured against where the tenant is now, not where it was last month.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MINUTE = 60
HOUR = 3600
DAY = 86400
Action = Literal["pause_tenant", "pause_key", "alert"]
Metric = Literal["requests", "spend"]


@dataclass(frozen=True, slots=True)
class TrafficRow:
    """Traffic of one key in one minute or hour; ``spend`` in pico-USD."""

    tenant_id: str
    key_id: str
    start: int
    requests: int
    spend: int


@dataclass(frozen=True, slots=True)
class Rate:
    requests: int = 0
    spend: int = 0

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.requests + other.requests, self.spend + other.spend)


ZERO = Rate()


@dataclass(frozen=True, slots=True)
class Policy:
    """One plan's detection settings; money in pico-USD per hour."""

    enabled: bool = True
    action: Action = "pause_tenant"
    threshold_pct: int = 500  # 500: six times the baseline
    window_s: int = 600
    min_requests_per_hour: int = 120
    min_spend_per_hour: int = 1_000_000_000_000  # $1
    floor_requests_per_hour: int = 60
    floor_spend_per_hour: int = 500_000_000_000  # $0.50
    history_days: int = 30
    quantile_pct: int = 90
    recent_hours: int = 3
    # a tenant with less history than this is alerted on, never paused; a key younger than
    # this is judged by its tenant's baseline
    learning_hours: int = 24
    cooldown_s: int = 3600

    @property
    def floor(self) -> Rate:
        return Rate(self.floor_requests_per_hour, self.floor_spend_per_hour)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a subject is anomalous: the metric, its projected hourly rate and the baseline."""

    metric: Metric
    observed: int  # per hour, projected from the window
    baseline: int  # per hour
    threshold: int  # per hour: what the observed rate had to exceed

    def percent_above(self) -> int:
        return (self.observed - self.baseline) * 100 // max(self.baseline, 1)


@dataclass(slots=True)
class Incident:
    """One detection: what was seen, what was done, and its paging key."""

    id: str
    tenant_id: str
    key_id: str  # "" when the whole tenant was anomalous
    target: Literal["tenant", "key", "none"]  # what was paused
    target_key: str  # the key paused, when target is "key"
    metric: str
    observed: int
    baseline: int
    threshold: int
    opened_at: float
    dedup_key: str
    resolved_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def hour_of(ts: float) -> int:
    return int(ts) // HOUR * HOUR


def window_start(now: float, window_s: int) -> int:
    """The first minute row that the window ending at ``now`` counts."""
    return int(now) // MINUTE * MINUTE - window_s + MINUTE


def projected(window: Rate, now: float, window_s: int) -> Rate:
    """The window's counts as hourly rates (the window ends at ``now``, mid-minute)."""
    span = max(int(now) - window_start(now, window_s), MINUTE)
    return Rate(window.requests * HOUR // span, window.spend * HOUR // span)


def _sum(pairs: Iterable[tuple[Any, TrafficRow]]) -> dict[Any, Rate]:
    acc: dict[Any, list[int]] = {}
    for group, row in pairs:
        cell = acc.get(group)
        if cell is None:
            acc[group] = [row.requests, row.spend]
        else:
            cell[0] += row.requests
            cell[1] += row.spend
    return {group: Rate(r, s) for group, (r, s) in acc.items()}


def totals(rows: Iterable[TrafficRow], by_key: bool) -> dict[tuple[str, str], Rate]:
    """Sum rows per tenant (key ``""``) or per tenant and key."""
    return _sum(((r.tenant_id, r.key_id if by_key else ""), r) for r in rows)


def series(rows: Iterable[TrafficRow], key_id: str | None = None) -> dict[int, Rate]:
    """Hourly totals of a tenant's rows, or of one key's (``key_id``)."""
    return _sum((r.start, r) for r in rows if key_id is None or r.key_id == key_id)


def _quantile(values: list[int], pct: int) -> int:
    ordered = sorted(values)
    rank = max(-(-len(ordered) * pct // 100), 1)  # nearest rank, ceil(n * pct / 100)
    return ordered[rank - 1]


def _weekend(ts: int) -> bool:
    return (ts // DAY + 3) % 7 >= 5  # 1970-01-01 was a Thursday: day 0 is weekday 3


def _time_of_day(history: Mapping[int, Rate], hour: int, first: int, since: int, p: Policy) -> Rate:
    """The percentile of this hour of the day (and its neighbours) over past days."""
    same: list[Rate] = []
    other: list[Rate] = []
    weekend = _weekend(hour)
    for day in range(1, p.history_days + 1):
        at = hour - day * DAY
        if at + HOUR < first:
            break  # before the subject's first traffic: no evidence either way
        near = [history.get(h, ZERO) for h in (at - HOUR, at, at + HOUR) if h >= since]
        peak = Rate(max(r.requests for r in near), max(r.spend for r in near))
        (same if _weekend(at) == weekend else other).append(peak)
    days = same if len(same) >= 3 else same + other
    if not days:
        return ZERO
    return Rate(
        _quantile([r.requests for r in days], p.quantile_pct),
        _quantile([r.spend for r in days], p.quantile_pct),
    )


def age_hours(history: Mapping[int, Rate], now: float) -> int:
    """Complete hours since the first hour with traffic (0 for none)."""
    hour = hour_of(now)
    past = [h for h in history if h < hour]
    return (hour - min(past)) // HOUR if past else 0


def baseline(history: Mapping[int, Rate], now: float, p: Policy) -> Rate:
    """The hourly rate that counts as normal at ``now`` (see the module docstring)."""
    hour = hour_of(now)
    since = hour - p.history_days * DAY
    first = min((h for h in history if since <= h < hour), default=None)
    if first is None:
        return p.floor
    recent = [
        history.get(h, ZERO)
        for h in range(hour - HOUR, hour - (p.recent_hours + 1) * HOUR, -HOUR)
        if h >= since
    ]
    tod = _time_of_day(history, hour, first, since, p)  # reads hours in [since, hour) only
    return Rate(
        max(p.floor_requests_per_hour, tod.requests, *(r.requests for r in recent)),
        max(p.floor_spend_per_hour, tod.spend, *(r.spend for r in recent)),
    )


def quiet_limit(base: Rate, p: Policy) -> Rate:
    """The highest hourly rate that ``assess`` cannot flag against ``base``, per metric."""
    return Rate(
        max(p.min_requests_per_hour - 1, base.requests * (100 + p.threshold_pct) // 100),
        max(p.min_spend_per_hour - 1, base.spend * (100 + p.threshold_pct) // 100),
    )


def assess(rate: Rate, base: Rate, p: Policy) -> Verdict | None:
    """A verdict when the hourly ``rate`` is anomalous against ``base``, else None."""
    checks: tuple[tuple[Metric, int, int, int], ...] = (
        ("requests", rate.requests, base.requests, p.min_requests_per_hour),
        ("spend", rate.spend, base.spend, p.min_spend_per_hour),
    )
    found: Verdict | None = None
    for metric, observed, normal, minimum in checks:
        if observed < minimum or observed * 100 <= normal * (100 + p.threshold_pct):
            continue
        verdict = Verdict(metric, observed, normal, normal * (100 + p.threshold_pct) // 100)
        if found is None or verdict.percent_above() > found.percent_above():
            found = verdict
    return found
