"""Meter readings from ledger entries: exact, per request or per tenant-hour."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from farebox.core.meters import METERS, hour_of, per_hour, per_request, render
from farebox.core.money import parse_usd
from tests.contracts.builders import entry


def test_per_request_readings_skip_zeros_and_placeholders() -> None:
    ok = entry("r1", tenant_id="acme", input_tokens=10, output_tokens=0, cost=123, revenue=0)
    placeholder = entry("r2", tenant_id="acme", status="unsettled", input_tokens=5)
    readings = per_request([ok, placeholder], METERS)
    assert {(r.unit, r.meter, r.raw) for r in readings} == {
        ("r1", "input_tokens", 10), ("r1", "cost_usd", 123), ("r1", "requests", 1),
    }  # fmt: skip


def test_money_renders_as_exact_decimal_usd() -> None:
    assert render("cost_usd", 1) == "0.000000000001"
    assert parse_usd(render("revenue_usd", 123_456_789_000_000)) == 123_456_789_000_000
    assert render("input_tokens", 42) == "42"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.floats(min_value=1.7e9, max_value=1.7e9 + 10 * 3600),
            st.integers(0, 10**15),
            st.integers(0, 10**6),
        ),
        max_size=60,
    )
)
def test_hourly_sums_equal_the_per_request_sums(rows: list[tuple[str, float, int, int]]) -> None:
    entries = [
        entry(f"r{i}", tenant_id=t, finished_at=ts, cost=c, input_tokens=n)
        for i, (t, ts, c, n) in enumerate(rows)
    ]
    hourly = per_hour(entries, METERS)
    requests = per_request(entries, METERS)
    for meter in METERS:
        for tenant in ("a", "b"):
            want = sum(r.raw for r in requests if r.meter == meter and r.tenant == tenant)
            got = sum(r.raw for r in hourly if r.meter == meter and r.tenant == tenant)
            assert got == want
    assert all(r.timestamp == hour_of(r.timestamp) for r in hourly)
