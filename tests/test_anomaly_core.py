"""The anomaly detector's pure logic (``farebox.core.anomaly``): the baseline, the verdict,
the window arithmetic; plus property tests of assess() and baseline(). Time is explicit."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.core.anomaly import (
    DAY,
    HOUR,
    MINUTE,
    Policy,
    Rate,
    TrafficRow,
    Verdict,
    age_hours,
    assess,
    baseline,
    hour_of,
    projected,
    series,
    totals,
    window_start,
)

MONDAY = 1_793_577_600  # 2026-11-02T00:00:00Z, a Monday
TUESDAY, WEDNESDAY, SATURDAY = MONDAY + DAY, MONDAY + 2 * DAY, MONDAY + 5 * DAY


def policy(**kw: Any) -> Policy:
    """Small numbers: floor 10 requests and 100 pico-USD an hour, no minimum volume."""
    values: dict[str, Any] = {
        "floor_requests_per_hour": 10, "floor_spend_per_hour": 100,
        "min_requests_per_hour": 0, "min_spend_per_hour": 0,
        "threshold_pct": 100, "quantile_pct": 100, "recent_hours": 1, "history_days": 30,
    }  # fmt: skip
    values.update(kw)
    return Policy(**values)


def at(day: int, hour: int) -> int:
    """The start of ``hour`` o'clock on the ``day``-th day after MONDAY."""
    return MONDAY + day * DAY + hour * HOUR


def req(n: int) -> Rate:
    return Rate(n, 0)


# --- baseline ----------------------------------------------------------------------------


def test_no_history_is_the_floor() -> None:
    p = Policy()
    assert baseline({}, WEDNESDAY + 10 * HOUR, p) == Rate(60, 500_000_000_000)
    assert baseline({}, WEDNESDAY, policy()) == Rate(10, 100)


def test_current_and_future_hours_are_ignored() -> None:
    now = at(2, 10) + 30 * MINUTE  # Wednesday 10:30
    history = {at(2, 10): Rate(9_999, 9_999), at(2, 11): Rate(9_999, 9_999)}
    assert baseline(history, now, policy()) == Rate(10, 100)
    history[at(2, 9)] = Rate(20, 300)  # the last complete hour counts
    assert baseline(history, now, policy()) == Rate(20, 300)


def test_time_of_day_uses_the_same_hour_and_its_neighbours_on_past_days() -> None:
    now = at(2, 10) + 30 * MINUTE  # Wednesday 10:30
    history = {
        at(1, 9): req(500),  # Tuesday, the hour before
        at(0, 11): req(400),  # Monday, the hour after
        at(1, 12): req(9_000),  # two hours off: not this time of day
        at(1, 8): req(9_000),
        at(2, 5): req(9_000),  # today, but not among the recent hours
    }
    assert baseline(history, now, policy()).requests == 500  # 100th percentile: the larger
    assert baseline(history, now, policy(quantile_pct=50)).requests == 400  # nearest rank


def test_time_of_day_percentile_is_nearest_rank() -> None:
    now = at(10, 10)  # Thursday of the second week
    history = {at(10 - d, 10): req(100 * d) for d in range(1, 11)}  # 100 .. 1000
    # ten days; the eight weekdays (Thursday's kind) are 100..300 and 600..1000
    assert baseline(history, now, policy(quantile_pct=100)).requests == 1000
    assert baseline(history, now, policy(quantile_pct=50)).requests == 600  # rank 4 of 8
    assert baseline(history, now, policy(quantile_pct=90)).requests == 1000  # rank 8 of 8
    assert baseline(history, now, policy(quantile_pct=85)).requests == 900  # rank 7 of 8
    assert baseline(history, now, policy(quantile_pct=1)).requests == 100


def test_weekdays_are_judged_by_weekdays_when_there_are_three() -> None:
    # a quiet week and a busy weekend: Monday's baseline ignores the weekend
    history = {at(d, 10): req(5_000 if d in (5, 6) else 100) for d in range(7)}
    assert baseline(history, at(7, 10), policy()).requests == 100
    # with fewer than three weekdays behind it, every day counts
    only = {at(d, 10): req(5_000 if d in (5, 6) else 100) for d in (4, 5, 6)}
    assert baseline(only, at(7, 10), policy()).requests == 5_000


def test_weekends_are_judged_by_weekends_when_there_are_three() -> None:
    # busy weekdays, quiet weekends, for three weeks; a Sunday looks at weekends only
    history = {at(d, 10): req(20 if d % 7 in (5, 6) else 1_000) for d in range(20)}
    assert baseline(history, at(20, 10), policy()).requests == 20
    # the first Saturday has no weekend behind it: the weekdays count
    assert baseline(history, at(5, 10), policy()).requests == 1_000


def test_recent_hours_component() -> None:
    now = at(2, 10) + 59  # Wednesday 10:00:59
    history = {at(2, 7): Rate(800, 5), at(2, 6): Rate(9_000, 7)}
    assert baseline(history, now, policy(recent_hours=3)) == Rate(800, 100)  # 7:00 is 3 back
    assert baseline(history, now, policy(recent_hours=4)) == Rate(9_000, 100)
    assert baseline(history, now, policy(recent_hours=2)) == Rate(10, 100)


def test_recent_hours_and_time_of_day_take_the_larger() -> None:
    now = at(2, 10)
    history = {at(1, 10): Rate(50, 9_000), at(2, 9): Rate(700, 200)}
    assert baseline(history, now, policy()) == Rate(700, 9_000)


def test_history_older_than_history_days_is_ignored() -> None:
    now = at(10, 10)  # Thursday of the second week
    p = policy(history_days=7)
    assert baseline({now - 7 * DAY - HOUR: req(5_000)}, now, p) == Rate(10, 100)
    assert baseline({now - 8 * DAY: req(5_000)}, now, p) == Rate(10, 100)
    assert baseline({now - 7 * DAY: req(5_000)}, now, p).requests == 5_000  # just inside
    assert baseline({now - 8 * DAY: req(5_000)}, now, policy(history_days=8)).requests == 5_000


def test_days_before_the_first_traffic_are_no_evidence() -> None:
    now = at(18, 10)  # Friday of the third week
    # one busy day yesterday: a new subject's only day of this hour
    assert baseline({at(17, 10): req(900)}, now, policy(quantile_pct=90)).requests == 900
    # the same day after weeks of quiet traffic elsewhere in the day is an outlier
    old = {at(17, 10): req(900), at(0, 3): req(1)}
    assert baseline(old, now, policy(quantile_pct=90)).requests == 10


# --- assess ------------------------------------------------------------------------------


def test_threshold_is_strictly_more_than_threshold_pct_above() -> None:
    base, p = Rate(100, 1_000), policy(threshold_pct=100)
    assert assess(Rate(200, 2_000), base, p) is None  # exactly twice: not more than 100% above
    assert assess(Rate(201, 0), base, p) == Verdict("requests", 201, 100, 200)
    assert assess(Rate(0, 2_001), base, p) == Verdict("spend", 2_001, 1_000, 2_000)


def test_threshold_rounds_down_and_still_means_strictly_above() -> None:
    p, base = policy(threshold_pct=50), Rate(3, 0)  # 4.5 requests/hour is the line
    assert assess(Rate(4, 0), base, p) is None
    verdict = assess(Rate(5, 0), base, p)
    assert verdict == Verdict("requests", 5, 3, 4)
    assert verdict.observed > verdict.threshold


def test_default_policy_is_six_times_the_baseline() -> None:
    base = Rate(60, 500_000_000_000)
    assert assess(Rate(360, 0), base, Policy()) is None
    assert assess(Rate(361, 0), base, Policy()) == Verdict("requests", 361, 60, 360)
    assert assess(Rate(0, 3_000_000_000_000), base, Policy()) is None
    spend = assess(Rate(0, 3_000_000_000_001), base, Policy())
    assert spend is not None and spend.metric == "spend"


def test_minimum_volume_is_respected() -> None:
    p = policy(min_requests_per_hour=500, min_spend_per_hour=5_000)
    base = Rate(1, 1)
    assert assess(Rate(499, 4_999), base, p) is None  # far above, but too little to page
    assert assess(Rate(500, 0), base, p) == Verdict("requests", 500, 1, 2)  # at the minimum
    assert assess(Rate(0, 5_000), base, p) == Verdict("spend", 5_000, 1, 2)


def test_picks_the_metric_most_above() -> None:
    p, base = policy(threshold_pct=100), Rate(100, 1_000)
    both = assess(Rate(400, 10_000), base, p)  # 300% and 900% above
    assert both is not None and both.metric == "spend" and both.percent_above() == 900
    other = assess(Rate(2_000, 3_000), base, p)  # 1900% and 200% above
    assert other is not None and other.metric == "requests" and other.percent_above() == 1_900
    tie = assess(Rate(300, 3_000), base, p)  # 200% each: the first checked
    assert tie is not None and tie.metric == "requests"


def test_percent_above() -> None:
    assert Verdict("requests", 350, 100, 200).percent_above() == 250
    assert Verdict("spend", 7, 0, 0).percent_above() == 700  # a zero baseline counts as 1


# --- window arithmetic, age, sums -----------------------------------------------------------


def test_window_start_and_projection() -> None:
    now = MONDAY + 10 * MINUTE + 30  # 00:10:30
    assert window_start(now, 600) == MONDAY + MINUTE  # minutes 00:01 .. 00:10
    assert projected(Rate(57, 570), now, 600) == Rate(360, 3_600)  # over 570 s
    on = MONDAY + 10 * MINUTE  # on a minute boundary the current minute has just begun
    assert window_start(on, 600) == MONDAY + MINUTE
    assert projected(Rate(54, 9), on, 600) == Rate(360, 60)  # over 540 s
    assert window_start(now + 0.999, 600) == MONDAY + MINUTE
    assert projected(Rate(1, 1), now, 600) == Rate(6, 6)  # 3600 // 570, rounded down


def test_projection_of_a_one_minute_window_spans_at_least_a_minute() -> None:
    on = MONDAY + 10 * MINUTE
    assert window_start(on, 60) == on
    assert projected(Rate(10, 10), on, 60) == Rate(600, 600)  # not a division by zero
    assert projected(Rate(10, 10), on + 30, 60) == Rate(600, 600)
    assert projected(Rate(10, 10), on + 59, 60) == Rate(600, 600)


def test_age_hours() -> None:
    now = at(2, 10) + 30 * MINUTE
    assert age_hours({}, now) == 0
    assert age_hours({at(2, 10): req(1)}, now) == 0  # only the current hour
    assert age_hours({at(2, 9): req(1)}, now) == 1
    assert age_hours({at(2, 5): req(1), at(2, 8): req(1)}, now) == 5
    assert age_hours({at(0, 10): req(1)}, at(2, 10)) == 48


def test_hour_of() -> None:
    assert hour_of(at(2, 10) + 3_599.9) == at(2, 10)
    assert type(hour_of(at(2, 10) + 0.5)) is int


def test_totals_and_series() -> None:
    rows = [
        TrafficRow("a", "k1", at(0, 1), 1, 10),
        TrafficRow("a", "k2", at(0, 1), 2, 20),
        TrafficRow("a", "k1", at(0, 2), 4, 40),
        TrafficRow("b", "k3", at(0, 1), 8, 80),
    ]
    assert totals(rows, by_key=False) == {("a", ""): Rate(7, 70), ("b", ""): Rate(8, 80)}
    assert totals(rows, by_key=True) == {
        ("a", "k1"): Rate(5, 50), ("a", "k2"): Rate(2, 20), ("b", "k3"): Rate(8, 80),
    }  # fmt: skip
    mine = [r for r in rows if r.tenant_id == "a"]
    assert series(mine) == {at(0, 1): Rate(3, 30), at(0, 2): Rate(4, 40)}
    assert series(mine, "k2") == {at(0, 1): Rate(2, 20)}
    assert series(mine, "nope") == {}
    assert Rate(1, 2) + Rate(3, 4) == Rate(4, 6)


def test_a_configurable_window_starts_on_a_minute_row() -> None:
    from pydantic import ValidationError

    from farebox.config.anomaly import AnomalySettings

    with pytest.raises(ValidationError):
        AnomalySettings(window_s=90)  # a window must be whole minutes: refused at start-up
    now = MONDAY + 10 * MINUTE + 30
    assert window_start(now, AnomalySettings(window_s=120).window_s) % MINUTE == 0


# --- properties --------------------------------------------------------------------------

counts = st.integers(0, 10**6)
money = st.integers(0, 10**15)
rates = st.builds(Rate, counts, money)
policies = st.builds(
    Policy,
    threshold_pct=st.integers(1, 2_000),
    min_requests_per_hour=counts,
    min_spend_per_hour=money,
    floor_requests_per_hour=st.integers(0, 10**4),
    floor_spend_per_hour=st.integers(0, 10**12),
    history_days=st.integers(1, 10),
    quantile_pct=st.integers(1, 100),
    recent_hours=st.integers(1, 6),
)
NOW = at(12, 10)
# fractional instants inside one hour, and hours from before the history to after now
instants = st.integers(0, HOUR * 1000 - 1).map(lambda ms: NOW + ms / 1000)
hours = st.integers(-11 * 24 - 3, 2).map(lambda h: hour_of(NOW) + h * HOUR)
histories = st.dictionaries(hours, rates, max_size=40)


def _line(observed: int, normal: int, p: Policy) -> bool:
    """Whether ``observed`` is more than ``threshold_pct`` above ``normal``."""
    return observed * 100 > normal * (100 + p.threshold_pct)


@given(rates, rates, policies)
def test_property_assess_never_fires_at_or_below_the_line_or_the_minimums(
    rate: Rate, base: Rate, p: Policy
) -> None:
    requests = _line(rate.requests, base.requests, p) and rate.requests >= p.min_requests_per_hour
    spend = _line(rate.spend, base.spend, p) and rate.spend >= p.min_spend_per_hour
    if not requests and not spend:
        assert assess(rate, base, p) is None
    if rate.requests < p.min_requests_per_hour and rate.spend < p.min_spend_per_hour:
        assert assess(rate, base, p) is None


@given(
    base=rates,
    p=policies,
    metric=st.sampled_from(["requests", "spend"]),
    extra=st.integers(1, 10**6),
    other=st.integers(0, 10**15),
)
def test_property_assess_fires_above_the_line_and_the_minimum(
    base: Rate, p: Policy, metric: str, extra: int, other: int
) -> None:
    normal = getattr(base, metric)
    minimum = p.min_requests_per_hour if metric == "requests" else p.min_spend_per_hour
    observed = max(normal * (100 + p.threshold_pct) // 100 + extra, minimum)
    rate = Rate(observed, other) if metric == "requests" else Rate(other, observed)
    verdict = assess(rate, base, p)
    assert verdict is not None
    # the verdict names a metric that is above its line and its minimum
    seen = getattr(rate, verdict.metric)
    assert verdict.observed == seen and verdict.baseline == getattr(base, verdict.metric)
    assert verdict.observed > verdict.threshold
    assert _line(verdict.observed, verdict.baseline, p)


@given(rates, rates, policies)
def test_property_assess_fires_exactly_when_a_metric_qualifies(
    rate: Rate, base: Rate, p: Policy
) -> None:
    qualifies = {
        m
        for m, minimum in (
            ("requests", p.min_requests_per_hour),
            ("spend", p.min_spend_per_hour),
        )
        if _line(getattr(rate, m), getattr(base, m), p) and getattr(rate, m) >= minimum
    }
    verdict = assess(rate, base, p)
    assert (verdict is not None) == bool(qualifies)
    if verdict is not None:
        assert verdict.metric in qualifies
        best = max(
            (getattr(rate, m) - getattr(base, m)) * 100 // max(getattr(base, m), 1)
            for m in qualifies
        )
        assert verdict.percent_above() == best


@settings(deadline=None)
@given(histories, instants, policies)
def test_property_baseline_is_at_least_the_floor(
    history: dict[int, Rate], now: float, p: Policy
) -> None:
    base = baseline(history, now, p)
    assert base.requests >= p.floor_requests_per_hour and base.spend >= p.floor_spend_per_hour


@settings(deadline=None)
@given(histories, histories, instants, policies)
def test_property_baseline_never_drops_when_traffic_grows(
    history: dict[int, Rate], extra: dict[int, Rate], now: float, p: Policy
) -> None:
    """More traffic at or after the subject's first hour (or outside the history) never lowers
    the baseline. (Moving the first hour earlier can: see the next test.)"""
    hour = hour_of(now)
    since = hour - p.history_days * DAY
    past = [h for h in history if since <= h < hour]
    if past:
        extra = {h: r for h, r in extra.items() if not since <= h < min(past)}
    grown = {h: history.get(h, Rate()) + extra.get(h, Rate()) for h in {*history, *extra}}
    before, after = baseline(history, now, p), baseline(grown, now, p)
    assert after.requests >= before.requests and after.spend >= before.spend


def test_sparse_history_does_not_make_one_busy_day_normal() -> None:
    """By design, the days since a subject's first traffic count as evidence of what this
    hour is normally like, quiet days included: one busy hour yesterday among weeks of
    silence at that hour stays unusual (the recent hours still guard against growth)."""
    p = Policy(recent_hours=1)
    history = {at(17, 10): Rate(900, 0)}
    now = at(18, 10)
    assert baseline(history, now, p).requests == 900  # one day of evidence: 900 is normal
    sparse = {**history, at(0, 3): Rate(1, 0)}  # a request 18 days ago: 17 quiet days too
    assert baseline(sparse, now, p).requests == p.floor_requests_per_hour


@settings(deadline=None)
@given(histories, instants, policies, rates, st.integers(1, 60).map(lambda m: m * MINUTE))
def test_property_arithmetic_stays_integer(
    history: dict[int, Rate], now: float, p: Policy, window: Rate, window_s: int
) -> None:
    base = baseline(history, now, p)
    assert type(base.requests) is int and type(base.spend) is int
    start = window_start(now, window_s)
    assert type(start) is int and start % MINUTE == 0 and start <= now
    rate = projected(window, now, window_s)
    assert type(rate.requests) is int and type(rate.spend) is int
    assert rate.requests >= 0 and rate.spend >= 0
    assert type(age_hours(history, now)) is int
    verdict = assess(rate, base, p)
    if verdict is not None:
        values = (verdict.observed, verdict.baseline, verdict.threshold, verdict.percent_above())
        assert all(type(v) is int for v in values)
