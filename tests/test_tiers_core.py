"""Tiered pricing's math (``farebox.core.tiers``): the graduated charge T(x) against an exact
rational reference, per-request revenue that telescopes to T(total) in any order, tier
boundaries crossed mid-request split exactly, and the config's start-up checks."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.config.settings import parse_settings
from farebox.config.tiers import TieredPricing, schedule
from farebox.core.money import MoneyFormatError, parse_usd
from farebox.core.tiers import SCALE, Tier, TieredEntry, TierSchedule, allot, month_of
from farebox.errors import ConfigError
from farebox.gateway.routing_table import build_plans

FAST = settings(max_examples=150, deadline=None)


@st.composite
def schedules(draw: st.DrawFn) -> TierSchedule:
    metric = draw(st.sampled_from(["tokens", "requests", "usd"]))
    included = draw(st.integers(0, 5_000))
    n = draw(st.integers(1, 5))
    widths = draw(st.lists(st.integers(1, 3_000), min_size=n - 1, max_size=n - 1))
    # prices with up to 12 decimals of USD (pico), some that make a token's price fractional
    prices = draw(st.lists(st.integers(0, 10**13), min_size=n, max_size=n))
    tiers, bound = [], included
    for w, p in zip(widths, prices, strict=False):
        bound += w
        tiers.append(Tier(bound, p))
    tiers.append(Tier(None, prices[-1]))
    return TierSchedule(metric, included, tuple(tiers))


def reference(s: TierSchedule, x: int) -> Fraction:
    """The exact charge of ``x`` units, walking the units one tier at a time."""
    total, low = Fraction(0), s.included
    for tier in s.tiers:
        high = x if tier.up_to is None else min(x, tier.up_to)
        if high > low:
            total += Fraction((high - low) * tier.price, SCALE[s.metric])
        if tier.up_to is not None:
            low = max(low, tier.up_to)
    return total


@FAST
@given(schedules(), st.integers(0, 20_000))
def test_charge_is_the_floor_of_the_exact_graduated_charge(s: TierSchedule, x: int) -> None:
    assert s.charge(x) == int(reference(s, x))  # floor (non-negative)
    assert 0 <= s.charge(x) - reference(s, x) + 1  # never above the exact charge
    assert s.charge(x) <= s.charge(x + 1)  # monotone
    parts = s.parts(x)
    assert sum(p.amount for p in parts) == s.charge(x)
    assert sum(p.units for p in parts[1:]) == max(x - s.included, 0)
    assert parts[0].units == min(x, s.included) and parts[0].amount == 0


@FAST
@given(schedules(), st.lists(st.integers(0, 2_500), max_size=40), st.randoms())
def test_per_request_revenue_telescopes_to_the_month_charge(
    s: TierSchedule, usage: list[int], rnd: random.Random
) -> None:
    for order in (usage, rnd.sample(usage, len(usage))):
        before, total = 0, 0
        for used in order:
            r = s.revenue(before, used)
            assert 0 <= r <= s.at_most(used)
            total += r
            before += used
        assert total == s.charge(sum(usage))


@FAST
@given(schedules(), st.integers(0, 20_000), st.integers(0, 20_000))
def test_a_request_across_boundaries_is_split_at_each(
    s: TierSchedule, before: int, used: int
) -> None:
    """Its revenue is the exact charge of its units in each tier it touches, up to the floor
    of the month's charge before and after it (less than one pico-USD each side)."""
    exact = reference(s, before + used) - reference(s, before)
    assert abs(s.revenue(before, used) - exact) < 1
    bounds = [t.up_to for t in s.tiers if t.up_to is not None] + [s.included]
    for b in bounds:  # split at a boundary: the two halves add up to the whole
        if before <= b <= before + used:
            assert s.revenue(before, b - before) + s.revenue(b, before + used - b) == s.revenue(
                before, used
            )


@FAST
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2_000)), max_size=60))
def test_allot_on_interleaved_batches_sums_to_the_charge(batches: list[tuple[int, int]]) -> None:
    """Entries written in batches of any size (the stores' way) earn T(total) together."""
    s = TierSchedule("tokens", 1_000, (Tier(3_000, 8_000_000), Tier(None, 6_500_001)))
    entries = [_entry(i, used) for i, (_, used) in enumerate(batches)]
    before, i = 0, 0
    for size, _ in batches:
        chunk = entries[i : i + size + 1]
        before = allot(chunk, before)
        i += size + 1
        if i >= len(entries):
            break
    written = entries[:i]
    assert sum(e.revenue for e in written) == s.charge(sum(e.tokens for e in written))


def _entry(i: int, tokens: int) -> TieredEntry:
    s = TierSchedule("tokens", 1_000, (Tier(3_000, 8_000_000), Tier(None, 6_500_001)))
    return TieredEntry(
        f"r{i}", "t", "k", "/v1/chat/completions", "m", "m", "p", "ok", 200, 0.0, 0.0,
        input_tokens=tokens, tier_schedule=s,
    )  # fmt: skip


def test_a_worked_example() -> None:
    """$8 per 1M tokens from 2M to 10M, $6 beyond: 12M tokens cost 8 * 8 + 2 * 6 = $76."""
    s = schedule("pro", TieredPricing.model_validate({
        "metric": "tokens", "included": 2_000_000,
        "tiers": [{"up_to": 10_000_000, "price": "8"}, {"price": "6"}],
    }))  # fmt: skip
    assert s.charge(12_000_000) == 76 * 10**12
    assert s.charge(2_000_000) == 0
    # 1,000 tokens at $8 per 1M ($0.008), then 1,000 at $6 per 1M ($0.006): split
    assert s.revenue(9_999_000, 2_000) == 8 * 10**9 + 6 * 10**9
    assert [p.amount for p in s.parts(12_000_000)] == [0, 64 * 10**12, 12 * 10**12]
    usd = schedule("u", TieredPricing(metric="usd", included="10", tiers=[{"price": "1.5"}]))
    assert usd.included == 10 * 10**12 and usd.charge(12 * 10**12) == 3 * 10**12
    assert month_of(1_793_491_199.9) == "2026-10" and month_of(1_793_491_200) == "2026-11"


def _settings(tmp_path: Path, pricing: Any) -> Any:
    data = {"database": f"sqlite:///{tmp_path / 'f.db'}",
            "plans": {"pro": {"models": ["*"], "pricing": pricing}}}  # fmt: skip
    return parse_settings(data, source="farebox.yaml", env={}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("tiered", "field"),
    [
        ({"tiers": []}, "plans.pro.pricing.tiered.tiers"),
        ({"tiers": [{"up_to": 5, "price": "1"}]}, "tiered.tiers[0].up_to"),
        ({"tiers": [{"price": "1"}, {"price": "2"}]}, "tiered.tiers[0].up_to"),
        ({"included": 10, "tiers": [{"up_to": 10, "price": "1"}, {"price": "1"}]}, "tiers[0]"),
        ({"tiers": [{"up_to": 9, "price": "1"}, {"up_to": 9, "price": "1"}, {"price": "0"}]},
         "tiers[1].up_to"),
        ({"tiers": [{"price": "0.0000000000001"}]}, "tiers[0].price"),
        ({"included": "1.5", "tiers": [{"price": "1"}]}, "tiered.included"),
        ({"metric": "seats", "tiers": [{"price": "1"}]}, "tiered.metric"),
    ],
)  # fmt: skip
def test_bad_tiers_are_a_start_up_error_naming_the_plan_and_field(
    tmp_path: Path, tiered: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, {"tiered": tiered, "monthly_fee_usd": "49"})
    assert "plans.pro.pricing" in str(caught.value) and field in str(caught.value)


def test_a_good_tiered_plan_becomes_its_rule_and_credits_are_refused(tmp_path: Path) -> None:
    pricing: dict[str, Any] = {"monthly_fee_usd": "49", "tiered": {
        "metric": "requests", "included": 100,
        "tiers": [{"up_to": 1000, "price": "0.01"}, {"price": "0.005"}]}}  # fmt: skip
    rule = build_plans(_settings(tmp_path, pricing))["pro"].revenue
    assert rule.tiered == TierSchedule(
        "requests", 100, (Tier(1000, parse_usd("0.01")), Tier(None, parse_usd("0.005")))
    )
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, {**pricing, "credits": {"per_usd": "1"}})
    assert "plans.pro.pricing" in str(caught.value) and "tiered" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, {**pricing, "markup": "2"})
    assert "plans.pro.pricing" in str(caught.value)
    with pytest.raises(MoneyFormatError):
        schedule("x", TieredPricing(metric="tokens", included="-1", tiers=[{"price": "1"}]))
