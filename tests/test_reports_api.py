"""Issue [11]: the rollup reports of the admin API (``/admin/v1/series`` and
``/admin/v1/top-spenders``) and the top-spenders computation they share with GraphQL and the
dashboard (``observe/reports.py``): exact money strings, exact shares, clear 4xx."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.core.money import format_usd
from farebox.core.records import SeriesPoint
from farebox.errors import InvalidRequest
from farebox.observe.reports import share, top_spenders
from tests.contracts.builders import DAY, T0, entry

HOUR = 3600
SPEND = {"a": (5, 2_000_000), "b": (1, 7_000_000), "c": (3, 1_000_000), "d": (2, 0)}


async def seeded(gw: Any) -> None:
    entries = []
    for tenant, (count, cost) in SPEND.items():
        for i in range(count):
            entries.append(
                entry(
                    f"{tenant}{i}",
                    tenant_id=tenant,
                    cost=cost,
                    revenue=2 * cost,
                    started_at=T0 + i * HOUR + 60,
                    http_status=200 + 300 * (i == 0),
                )
            )
    await gw.store.append_ledger(entries)  # fmt: skip


async def report(gw: Any, path: str, **params: str) -> Any:
    """``GET /admin/v1/{path}`` with the admin key and these query parameters."""
    return await gw.client.get(f"/admin/v1/{path}", params=params, headers=gw.admin)


async def test_series_answers_exact_money_per_bucket_and_group(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await seeded(gw)
        r = await report(gw, "series", start=str(T0), end=str(T0 + DAY), bucket="hour",
                         group_by="tenant", tenant_id="a")  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["bucket"] for p in body["data"]] == [T0 + i * HOUR for i in range(5)]
    assert {p["group"] for p in body["data"]} == {"a"}
    first = body["data"][0]
    assert (first["requests"], first["errors"]) == (1, 1)
    assert (first["cost_usd"], first["revenue_usd"], first["margin_usd"]) == (
        format_usd(2_000_000),
        format_usd(4_000_000),
        format_usd(2_000_000),
    )
    assert first["bucket_start"] == "2025-06-16T00:00:00+00:00"
    assert len(first["latency_buckets"]) == len(body["latency_bounds_ms"]) + 1


async def test_series_in_a_zone_and_for_the_whole_range(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await seeded(gw)
        r = await report(gw, "series", start="2025-06-15T00:00:00Z", end="2025-06-18T00:00:00Z",
                         bucket="day", tz="Asia/Tokyo")  # fmt: skip
        whole = await report(gw, "series", start=str(T0), end=str(T0 + DAY), bucket="all",
                             group_by="tenant")  # fmt: skip
    assert r.status_code == 200, r.text
    # Tokyo is UTC+9: hours 00..14 UTC of the 16th are the 16th there
    assert [(p["bucket_start"], p["requests"]) for p in r.json()["data"]] == [
        ("2025-06-16T00:00:00+09:00", 11)
    ]
    got = {p["group"]: p["cost_usd"] for p in whole.json()["data"]}
    assert got == {t: format_usd(n * c) for t, (n, c) in SPEND.items()}


async def test_top_spenders_by_cost_and_revenue_with_exact_shares(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await seeded(gw)
        span = {"start": str(T0), "end": str(T0 + DAY)}
        by_cost = await report(gw, "top-spenders", **span, n="2")
        by_revenue = await report(gw, "top-spenders", **span, by="revenue", top_percent="50")
    assert by_cost.status_code == 200, by_cost.text
    body = by_cost.json()
    # a: 10,000,000; b: 7,000,000; c: 3,000,000; d: 0 -> total 20,000,000
    assert body["total_usd"] == format_usd(20_000_000)
    assert body["tenants"] == 4
    assert [(s["tenant"], s["amount_usd"], s["share_percent"]) for s in body["data"]] == [
        ("a", format_usd(10_000_000), "50.00"), ("b", format_usd(7_000_000), "35.00"),
    ]  # fmt: skip
    assert [s["tenant"] for s in by_revenue.json()["data"]] == ["a", "b"]  # 50% of 4 tenants


@pytest.mark.parametrize(
    "params",
    [
        {"end": str(T0)},  # no start
        {"start": str(T0), "end": str(T0 - 1)},  # backwards
        {"start": str(T0), "end": str(T0 + DAY), "tz": "Mars/Olympus"},
        {"start": str(T0), "end": str(T0 + DAY), "group_by": "user"},
        {"start": str(T0), "end": str(T0 + DAY), "bucket": "week"},
        {"start": str(T0), "end": str(T0 + 400 * DAY), "bucket": "hour"},
        {"start": str(T0), "end": str(T0 + 21 * 366 * DAY), "bucket": "month"},
        {"start": "yesterday", "end": str(T0)},
        {"start": str(T0), "end": str(T0 + DAY), "colour": "red"},
    ],
)
async def test_series_refuses_what_it_cannot_answer(
    make_gateway: Any, params: dict[str, str]
) -> None:
    async with make_gateway() as gw:
        r = await report(gw, "series", **params)
    assert 400 <= r.status_code < 500, r.text


@pytest.mark.parametrize(
    "params",
    [{"n": "0"}, {"top_percent": "0"}, {"top_percent": "101"}, {"n": "2", "top_percent": "5"},
     {"by": "margin"}],
)  # fmt: skip
async def test_top_spenders_refuses_bad_input(make_gateway: Any, params: dict[str, str]) -> None:
    async with make_gateway() as gw:
        r = await report(gw, "top-spenders", **{"start": str(T0), "end": str(T0 + DAY), **params})
    assert 400 <= r.status_code < 500, r.text


async def test_the_reports_need_the_admin_key(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        r = await gw.client.get("/admin/v1/top-spenders?start=0&end=1")
    assert r.status_code == 401


# --- the pure computation ----------------------------------------------------------------

amounts = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3),
                          st.integers(0, 10**18), min_size=1, max_size=30)  # fmt: skip


@given(amounts, st.integers(1, 40))
def test_top_n_is_the_largest_and_shares_are_exact(spend: dict[str, int], n: int) -> None:
    points = [SeriesPoint(T0, t, requests=1, cost=c) for t, c in spend.items()]
    top = top_spenders(points, "cost", n=n)
    ranked = sorted(spend.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    assert [(s.tenant, s.amount) for s in top.data] == ranked
    assert top.total == sum(spend.values())
    for s in top.data:
        if top.total:
            assert s.share_percent is not None
            # within half a hundredth of a percent of the exact share
            assert abs(float(s.share_percent) * top.total - 100 * s.amount) <= 0.005 * top.total
        else:
            assert s.share_percent is None


@given(amounts, st.floats(0.01, 100))
def test_top_percent_takes_that_share_of_tenants_rounded_up(
    spend: dict[str, int], pct: float
) -> None:
    points = [SeriesPoint(T0, t, revenue=c) for t, c in spend.items()]
    top = top_spenders(points, "revenue", top_percent=pct)
    assert len(top.data) >= pct * len(spend) / 100 - 1e-9
    assert len(top.data) - 1 < pct * len(spend) / 100 + 1e-9


def test_share_rounds_half_to_even() -> None:
    assert share(1, 8) == "12.50"
    assert share(1, 80000) == "0.00"  # 0.00125 -> 0.00
    assert share(3, 80000) == "0.00"  # 0.00375 -> 0.00 (half-even of 0.375 cents is 0)
    assert share(1, 3) == "33.33"
    assert share(2, 3) == "66.67"
    assert share(5, 0) is None
    with pytest.raises(InvalidRequest):
        top_spenders([], "cost")


@pytest.mark.parametrize("start", ["1e300", "-1e13", "nan", "inf"])
async def test_series_refuses_times_beyond_any_calendar(make_gateway: Any, start: str) -> None:
    async with make_gateway() as gw:
        r = await report(gw, "series", start=start, end="2e300")
        spenders = await report(gw, "top-spenders", start=start, end="2e300")
    assert r.status_code == 400, r.text
    assert spenders.status_code == 400, spenders.text


async def test_sqlite_reports_answer_while_the_writer_thread_is_busy(tmp_path: Any) -> None:
    """Reports read on their own connection and thread: with the store's writer thread held
    (as by a long write), series and usage still answer."""
    import asyncio
    import threading

    from farebox.core.records import SeriesQuery, UsageQuery
    from farebox.stores.sqlite.store import SQLiteStore

    store = SQLiteStore(tmp_path / "busy.db")
    await store.open()
    release = threading.Event()
    try:
        await store.append_ledger([entry("r1", cost=5), entry("r2", cost=7, started_at=T0 + 1)])
        held = asyncio.get_running_loop().run_in_executor(store._executor, release.wait, 30)
        series = await asyncio.wait_for(store.series(SeriesQuery(T0, T0 + DAY, "all")), 10)
        usage = await asyncio.wait_for(store.usage(UsageQuery(group_by="tenant")), 10)
        assert not held.done()  # the writer thread was busy all along
        assert [(p.requests, p.cost) for p in series] == [(2, 12)]
        assert [(u.group, u.cost) for u in usage] == [("acme", 12)]
    finally:
        release.set()
        await held
        await store.close()
