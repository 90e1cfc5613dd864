"""Issue [13]: the exact arithmetic of prepaid credits (``farebox.core.credits``). Credits
convert to pico-USD and back exactly; burns draw on the grant that expires first; an expiry
forfeits what its grant had left and never takes the balance below what is spent or held."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.core.credits import (
    CreditGrant,
    CreditRate,
    CreditTerms,
    allocate,
    available,
    closings,
    forfeited,
    next_expiry,
)
from farebox.core.money import PICO_PER_USD, MoneyFormatError

RATES = st.sampled_from(["1", "2", "4", "5", "10", "100", "1000", "0.5", "0.001", "1000000"])


@given(rate=RATES, units=st.integers(0, 10**15))
def test_credits_round_trip_exactly(rate: str, units: int) -> None:
    r = CreditRate.of(rate)
    assert r.to_pico(r.credits(PICO_PER_USD)) == PICO_PER_USD  # one USD, both ways
    text = r.credits(units)
    assert r.to_pico(text) == units  # every pico-USD amount is a terminating number of credits


@given(rate=RATES, whole=st.integers(0, 10**9), frac=st.integers(0, 999))
def test_a_decimal_grant_converts_exactly_or_not_at_all(rate: str, whole: int, frac: int) -> None:
    r = CreditRate.of(rate)
    text = f"{whole}.{frac:03d}"
    try:
        pico = r.to_pico(text)
    except MoneyFormatError:
        assert (whole * 1000 + frac) * r.unit % 1000 != 0
        return
    assert pico * 1000 == (whole * 1000 + frac) * r.unit


@pytest.mark.parametrize("rate", ["3", "7", "0", "-1", "abc", "0.3"])
def test_a_rate_that_is_not_a_whole_number_of_pico_usd_per_credit_is_refused(rate: str) -> None:
    with pytest.raises(MoneyFormatError):
        CreditRate.of(rate)


def grant(i: int, amount: int, expires: float | None, opened: int = 0) -> CreditGrant:
    return CreditGrant(id=f"g{i}", tenant_id="t", key=f"k{i}", kind="promo", amount=amount,
                       created_at=float(i), expires_at=expires, opened_at_burn=opened)  # fmt: skip


grant_lists = st.lists(
    st.tuples(st.integers(1, 10**6), st.one_of(st.none(), st.integers(1, 100))),
    min_size=1,
    max_size=6,
).map(
    lambda items: [grant(i, a, None if e is None else float(e)) for i, (a, e) in enumerate(items)]
)


@given(grants=grant_lists, share=st.integers(0, 100))
def test_burns_fill_the_first_to_expire_first(grants: list[CreditGrant], share: int) -> None:
    total = sum(g.amount for g in grants)
    burned = total * share // 100
    used = allocate(grants, burned)
    assert sum(used.values()) == burned and "" not in used
    ordered = sorted(grants, key=lambda g: (g.expires_at or math.inf, g.created_at))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if used[after.id] > 0:  # a later grant takes burn only once the earlier is used up
            assert used[before.id] == before.amount
    assert all(0 <= used[g.id] <= g.amount for g in grants)


@given(
    grants=grant_lists,
    share=st.integers(0, 100),
    held=st.integers(0, 100),
    settled=st.integers(0, 100),
    now=st.integers(0, 120),
)
def test_an_expiry_forfeits_only_what_is_free_and_settles_once(
    grants: list[CreditGrant], share: int, held: int, settled: int, now: int
) -> None:
    total = available(grants)
    burned = total * share // 100
    reserved = (total - burned) * held // 100
    pairs = closings(grants, float(now), burned, reserved)
    after = {a.id: a for _, a in pairs}
    wanted = sum((a.forfeited or 0) - (b.forfeited or 0) for b, a in pairs)
    assert burned + reserved + wanted <= total  # the holds in flight may still burn it all
    current = [after.get(g.id, g) for g in grants]
    for g in current:
        due = g.expires_at is not None and g.expires_at <= now
        assert (g.closed_at_burn is not None) == due
        assert g.pending == (due and reserved > 0)
    assert closings(current, float(now), burned, reserved) == []  # recorded once
    # the holds settle below what they held; the pending forfeits become final
    later = burned + reserved * settled // 100
    final = closings(current, float(now), later, 0)
    done = {a.id: a for _, a in final}
    current = [done.get(g.id, g) for g in current]
    assert not any(g.pending for g in current)
    assert later + forfeited(current) <= total  # never below zero
    used = allocate(current, later)
    for g in current:
        if g.closed_at_burn is not None:  # an ended grant forfeits exactly what it did not burn
            assert (g.forfeited or 0) + used[g.id] == g.amount
    assert next_expiry(current) is None or next_expiry(current) > now


def test_a_grant_made_after_burns_does_not_absorb_them() -> None:
    old = grant(0, 100, None)
    promo = grant(1, 50, 10.0, opened=80)  # granted when 80 had been burned
    used = allocate([old, promo], 120)
    assert used == {"g0": 80, "g1": 40}  # burns after the promo draw on it first
    [(_, closed)] = closings([old, promo], 11.0, 120, 0)
    assert (closed.id, closed.forfeited, closed.pending) == ("g1", 10, False)
    assert allocate([old, closed], 140) == {"g0": 100, "g1": 40}  # after its expiry: the old one


def test_holds_in_flight_at_an_expiry_may_burn_it_then_the_rest_is_forfeited() -> None:
    promo = grant(0, 100, 10.0)
    [(_, first)] = closings([promo], 11.0, 0, 100)  # one request holds all of it
    assert (first.forfeited, first.pending) == (0, True)
    assert closings([first], 11.0, 0, 100) == []  # still held: nothing more yet
    [(_, final)] = closings([first], 12.0, 10, 0)  # it settled at 10
    assert (final.forfeited, final.pending) == (90, False)


def test_low_balance_thresholds_cross_once_each() -> None:
    terms = CreditTerms(CreditRate.of("1"), (100, 50), (50, 1000))
    assert terms.crossed(120, 90) == [100]
    assert terms.crossed(90, 10) == [50]
    assert terms.crossed(200, 10) == [100, 50]
    assert terms.crossed(40, 10) == []
