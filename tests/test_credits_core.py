"""Issue [13]: the exact arithmetic of prepaid credits (``farebox.core.credits``). Credits
convert to pico-USD and back exactly; burns draw on the grant that expires first; an expiry
forfeits what its grant had left and never takes the balance below what is spent or held."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.core.credits import (
    CreditGrant,
    CreditRate,
    CreditTerms,
    allocate,
    available,
    forfeit,
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


@given(grants=grant_lists, share=st.integers(0, 100), now=st.integers(0, 120))
def test_an_expiry_never_takes_the_balance_below_what_is_spent(
    grants: list[CreditGrant], share: int, now: int
) -> None:
    total = sum(g.amount for g in grants)
    burned = total * share // 100
    closed = {g.id: g for g in forfeit(grants, float(now), burned)}
    after = [closed.get(g.id, g) for g in grants]
    assert available(after) >= burned
    assert available(after) + sum(g.forfeited or 0 for g in after) == total
    for g in after:
        assert (g.closed_at_burn is not None) == (g.expires_at is not None and g.expires_at <= now)
    assert next_expiry(after) is None or next_expiry(after) > now
    assert forfeit(after, float(now), burned) == []  # recorded once


def test_a_grant_made_after_burns_does_not_absorb_them() -> None:
    old = grant(0, 100, None)
    promo = grant(1, 50, 10.0, opened=80)  # granted when 80 had been burned
    used = allocate([old, promo], 120)
    assert used == {"g0": 80, "g1": 40}  # burns after the promo draw on it first
    closed = forfeit([old, promo], 11.0, 120)
    assert [(g.id, g.forfeited) for g in closed] == [("g1", 10)]
    after = [old, replace(promo, closed_at_burn=120, forfeited=10)]
    assert allocate(after, 140) == {"g0": 100, "g1": 40}  # after its expiry, only the old one


def test_low_balance_thresholds_cross_once_each() -> None:
    terms = CreditTerms(CreditRate.of("1"), (100, 50), (50, 1000))
    assert terms.crossed(120, 90) == [100]
    assert terms.crossed(90, 10) == [50]
    assert terms.crossed(200, 10) == [100, 50]
    assert terms.crossed(40, 10) == []
