"""The ``ReportStore.series`` contract, on every backend: series read from the hourly rollups
equal the sums of the entries the ledger holds, exactly, whatever wrote, replaced or ignored
them (batches, repeated request ids, placeholders of expired leases and the late settlements
that replace them, ledger-free counts), for any range, bucket, time zone, group and filter."""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.records import (
    LATENCY_BOUNDS_MS,
    ROLLUP_DIMENSIONS,
    LedgerEntry,
    SeriesPoint,
    SeriesQuery,
)
from farebox.errors import InvalidRequest
from farebox.stores import rollup_rows
from farebox.stores.memory.rollups import MemoryReports
from tests.contracts.backends import EVERY
from tests.contracts.builders import DAY, T0, entry, hold, play_ledger, reservation, settlement

BACKENDS = EVERY
HOUR = 3600
ZONES = ("UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe")
EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --- what the ledger says, computed from its entries -------------------------------------


def bucket_start(hour: int, q: SeriesQuery) -> float:
    if q.bucket == "all":
        return float(q.start)
    if q.bucket == "hour":
        return float(hour)
    tz = ZoneInfo(q.tz)
    day = datetime.fromtimestamp(hour, tz).date()
    if q.bucket == "month":
        day = day.replace(day=1)
    return datetime.combine(day, time(0), tzinfo=tz).timestamp()


def selected(e: LedgerEntry, q: SeriesQuery) -> bool:
    wanted = {"tenant_id": e.tenant_id, "key_id": e.key_id, "model": e.model_served,
              "feature": e.feature, "status": e.status}  # fmt: skip
    return q.start <= e.started_at < q.end and all(
        getattr(q, name) is None or getattr(q, name) == have for name, have in wanted.items()
    )


def group_of(e: LedgerEntry, q: SeriesQuery) -> str | None:
    return {None: None, "tenant": e.tenant_id, "key": e.key_id, "model": e.model_served,
            "feature": e.feature, "status": e.status}[q.group_by]  # fmt: skip


def us(ms: float) -> int:
    return int(ms * 1000 + 0.5)


def expected(entries: list[LedgerEntry], q: SeriesQuery) -> list[SeriesPoint]:
    sums: dict[tuple[float, str | None], list[Any]] = defaultdict(
        lambda: [0] * 11 + [[0] * (len(LATENCY_BOUNDS_MS) + 1), 0, 0]
    )
    for e in entries:
        if not selected(e, q):
            continue
        s = sums[(bucket_start(int(e.started_at // HOUR) * HOUR, q), group_of(e, q))]
        for i, v in enumerate([1, e.http_status >= 400, e.input_tokens, e.cached_input_tokens,
                               e.cache_write_5m_tokens + e.cache_write_1h_tokens,
                               e.output_tokens, e.reasoning_tokens, e.cost, e.revenue,
                               us(e.latency_ms), us(e.upstream_ms)]):  # fmt: skip
            s[i] += int(v)
        s[11][bisect.bisect_left(LATENCY_BOUNDS_MS, e.latency_ms)] += 1
        s[12] += e.saved
        s[13] += e.cache == "miss"
    order = sorted(sums, key=lambda k: (k[0], k[1] is None, k[1] or ""))
    return [
        SeriesPoint(
            bucket=b,
            group=g,
            requests=v[0],
            errors=v[1],
            input_tokens=v[2],
            cached_input_tokens=v[3],
            cache_write_tokens=v[4],
            output_tokens=v[5],
            reasoning_tokens=v[6],
            cost=v[7],
            revenue=v[8],
            latency_ms_sum=v[9] / 1000,
            upstream_ms_sum=v[10] / 1000,
            latency_buckets=tuple(v[11]),
            saved=v[12],
            cache_misses=v[13],
        )  # fmt: skip
        for (b, g), v in ((k, sums[k]) for k in order)
    ]


# --- generated traffic -------------------------------------------------------------------

latency = st.one_of(
    st.sampled_from([0.0, *map(float, LATENCY_BOUNDS_MS)]),
    st.floats(0, 90_000, allow_nan=False, allow_infinity=False),
)
fields = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["a", "b", "c"]),
        "key_id": st.sampled_from(["k1", "k2"]),
        "model_served": st.sampled_from(["m1", "m2"]),
        "feature": st.sampled_from([None, "f1", "f2"]),
        "status": st.sampled_from(["ok", "error", "cancelled"]),
        "http_status": st.sampled_from([200, 400, 429, 499, 500]),
        # two DST changes (2025-03-09/30, 2025-10-26, 2025-11-02) inside the range
        "started_at": st.floats(T0 - 120 * DAY, T0 + 160 * DAY, allow_nan=False),
        "input_tokens": st.integers(0, 10**7),
        "cached_input_tokens": st.integers(0, 10**6),
        "cache_write_5m_tokens": st.integers(0, 10**6),
        "cache_write_1h_tokens": st.integers(0, 10**6),
        "output_tokens": st.integers(0, 10**7),
        "reasoning_tokens": st.integers(0, 10**6),
        "cost": st.integers(0, 10**13),
        "revenue": st.integers(0, 10**13),
        "saved": st.integers(0, 10**13),
        "cache": st.sampled_from([None, "hit-exact", "miss", "bypass"]),
        "latency_ms": latency,
        "upstream_ms": latency,
    }
)
operation = st.tuples(st.sampled_from(["append", "repeat", "placeholder", "lease"]), fields)
edge = st.one_of(
    st.floats(T0 - 130 * DAY, T0 + 170 * DAY, allow_nan=False),
    st.integers(-3000, 4000).map(lambda h: T0 + h * HOUR),  # whole hours
)
queries = st.builds(
    SeriesQuery,
    start=edge,
    end=edge,
    bucket=st.sampled_from(["hour", "day", "month", "all"]),
    tz=st.sampled_from(ZONES),
    group_by=st.sampled_from([None, *ROLLUP_DIMENSIONS]),
    tenant_id=st.sampled_from([None, None, "a"]),
    feature=st.sampled_from([None, None, "f1"]),
    status=st.sampled_from([None, None, "ok", "unsettled"]),
)


async def play(store: Any, run: int, ops: list[tuple[str, dict[str, Any]]]) -> None:
    """The operations as the gateway would do them (``play_ledger``): a retry costs more
    (and is ignored), a placeholder costs 0."""
    await play_ledger(store, run, ops, repeat=lambda f: {"cost": f["cost"] + 1}, stub={"cost": 0})


@given(ops=st.lists(operation, max_size=14), asked=st.lists(queries, min_size=1, max_size=4))
@EXAMPLES
async def test_series_equal_the_ledger_sums(
    store: Any, ops: list[tuple[str, dict[str, Any]]], asked: list[SeriesQuery]
) -> None:
    run = next(RUNS)
    await play(store, run, ops)
    entries = await store.ledger()
    for q in asked:
        assert await store.series(q) == (expected(entries, q) if q.start < q.end else [])


RUNS = itertools.count()


# --- the paths, one by one ---------------------------------------------------------------


def whole(start: float = T0, end: float = T0 + DAY, **kw: Any) -> SeriesQuery:
    return SeriesQuery(start=start, end=end, **{"bucket": "all", **kw})


async def test_a_repeated_request_id_adds_nothing(store: Any) -> None:
    await store.append_ledger([entry("r1", cost=7, latency_ms=12.5)])
    await store.append_ledger([entry("r1", cost=900), entry("r2", cost=5, started_at=T0 + 1)])
    (p,) = await store.series(whole())
    assert (p.requests, p.cost, p.latency_ms_sum) == (2, 12, 12.5)
    assert p.latency_buckets[LATENCY_BOUNDS_MS.index(25)] == 1


@pytest.mark.backends("memory", "sqlite", "sqlite-single-process", "postgres+redis")
async def test_a_late_settlement_replaces_its_placeholder_in_the_rollups(store: Any) -> None:
    h = hold("t:acme", 10**12)
    assert (await store.reserve(reservation("r1", 100, [h], expires_at=T0 + 30))).ok
    assert len(await store.reclaim_expired(T0 + 31)) == 1
    by_status = SeriesQuery(T0, T0 + DAY, bucket="all", group_by="status")
    assert [(p.group, p.requests, p.cost) for p in await store.series(by_status)] == [
        ("unsettled", 1, 0)
    ]
    await store.append_ledger([settlement("r1", 45)])
    assert [(p.group, p.requests, p.cost) for p in await store.series(by_status)] == [("ok", 1, 45)]


@pytest.mark.backends("memory", "sqlite", "sqlite-single-process", "postgres+redis")
async def test_a_ledger_free_count_never_reaches_a_rollup(store: Any) -> None:
    count = reservation("c1", 0, [hold("rl:k1:m", 10, unit="requests")])
    free = count.unsettled.__class__(**{**_fields(count.unsettled), "status": "ledger_free"})
    counted = type(count)(count.id, 0, count.holds, T0 + 30, free)
    assert (await store.reserve(counted)).ok
    await store.settle_counters(counted)
    assert await store.reclaim_expired(T0 + DAY) == []
    assert await store.series(whole()) == []


def _fields(e: LedgerEntry) -> dict[str, Any]:
    return {f: getattr(e, f) for f in e.__dataclass_fields__}


async def test_cut_hours_at_both_ends_are_read_exactly(store: Any) -> None:
    times = [T0 + 10, T0 + 1800, T0 + HOUR + 5, T0 + 2 * HOUR + 1799, T0 + 2 * HOUR + 1800]
    await store.append_ledger(
        [entry(f"r{i}", started_at=t, cost=1 + i) for i, t in enumerate(times)]
    )
    # [00:30, 02:30): the second half of hour 0, all of hour 1, the first half of hour 2
    q = SeriesQuery(T0 + 1800, T0 + 2 * HOUR + 1800, bucket="hour")
    assert [(p.bucket, p.requests, p.cost) for p in await store.series(q)] == [
        (T0, 1, 2), (T0 + HOUR, 1, 3), (T0 + 2 * HOUR, 1, 4),
    ]  # fmt: skip
    inside_one_hour = SeriesQuery(T0 + 5, T0 + 1801, bucket="all")
    assert [(p.requests, p.cost) for p in await store.series(inside_one_hour)] == [(2, 3)]


async def test_days_and_months_follow_the_zones_wall_clock(store: Any) -> None:
    # 03:30 UTC on 16 June is still the 15th in New York (UTC-4); 04:00 is the 16th
    await store.append_ledger([
        entry("r1", started_at=T0 + 3 * HOUR + 1800, cost=1),
        entry("r2", started_at=T0 + 4 * HOUR, cost=2),
        entry("r3", started_at=T0 + 20 * DAY + 5 * HOUR, cost=4),  # 6 July, 01:00 there
    ])  # fmt: skip
    q = SeriesQuery(T0 - DAY, T0 + 30 * DAY, bucket="day", tz="America/New_York")
    days = [(p.bucket, p.cost) for p in await store.series(q)]
    assert days == [(T0 - DAY + 4 * HOUR, 1), (T0 + 4 * HOUR, 2), (T0 + 20 * DAY + 4 * HOUR, 4)]
    months = SeriesQuery(T0 - DAY, T0 + 30 * DAY, bucket="month", tz="America/New_York")
    june = datetime(2025, 6, 1, tzinfo=ZoneInfo("America/New_York")).timestamp()
    july = datetime(2025, 7, 1, tzinfo=ZoneInfo("America/New_York")).timestamp()
    assert [(p.bucket, p.cost) for p in await store.series(months)] == [(june, 3), (july, 4)]


async def test_groups_sort_with_none_last_and_filters_apply(store: Any) -> None:
    await store.append_ledger([
        entry("r1", feature="b", cost=1), entry("r2", feature=None, cost=2),
        entry("r3", feature="a", cost=4, key_id="k2"), entry("r4", feature="a", cost=8),
    ])  # fmt: skip
    got = await store.series(whole(group_by="feature"))
    assert [(p.group, p.cost) for p in got] == [("a", 12), ("b", 1), (None, 2)]
    assert [(p.group, p.cost) for p in await store.series(whole(key_id="k2", group_by="key"))] == [
        ("k2", 4)
    ]


@pytest.mark.parametrize(
    "bad",
    [{"bucket": "week"}, {"group_by": "user"}, {"tz": "Mars/Olympus"}, {"tz": "../etc"}],
)
async def test_what_series_cannot_answer_is_a_clear_error(store: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        await store.series(whole(**bad))


async def test_an_empty_range_is_empty(store: Any) -> None:
    await store.append_ledger([entry("r1")])
    assert await store.series(whole(start=T0 + 1, end=T0 + 1)) == []
    assert await store.series(whole(start=T0 + 5, end=T0)) == []


async def test_a_latency_beyond_any_clock_never_fails_the_write(store: Any) -> None:
    # latencies are clamped to 1e12 ms before they are summed: the ledger write still lands
    weird = [entry("r1", latency_ms=float("inf"), upstream_ms=float("-inf")),
             entry("r2", latency_ms=1e300, started_at=T0 + 1)]  # fmt: skip
    await store.append_ledger(weird)
    (p,) = await store.series(whole())
    assert p.requests == 2
    # (-1e12 ms * 1000 + 0.5, truncated toward zero: -999,999,999,999,999 us)
    assert (p.latency_ms_sum, p.upstream_ms_sum) == (2e12, -999_999_999_999.999)
    assert p.latency_buckets[-1] == 2


@pytest.mark.backends("memory", "postgres", "postgres+redis")
async def test_a_nan_latency_counts_as_the_longest(store: Any) -> None:
    # PostgreSQL keeps NaN (SQLite refuses it in the ledger itself) and sorts it above
    # every number: it is clamped to 1e12 ms and counted in the +inf bucket, as in memory
    await store.append_ledger([entry("r1", latency_ms=float("nan"), upstream_ms=3.0)])
    (p,) = await store.series(whole())
    assert (p.latency_ms_sum, p.upstream_ms_sum, p.latency_buckets[-1]) == (1e12, 3.0, 1)


# --- bounds (review finding 1) and exact money (finding 10) --------------------------------


@pytest.fixture
def rows_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows each series' statement returned (as its fold counted them)."""
    seen: list[int] = []
    folded = rollup_rows.Fold.points

    def points(self: rollup_rows.Fold) -> list[SeriesPoint]:
        seen.append(self.rows)
        return folded(self)

    monkeypatch.setattr(rollup_rows.Fold, "points", points)
    return seen


async def test_a_month_series_by_feature_reads_about_one_row_a_point(
    store: Any, rows_read: list[int]
) -> None:
    # 60 days x 60 features, an entry every 4 hours: grouped per hour, 21,600 rows
    days, features = 60, 60
    await store.append_ledger([
        entry(f"r{h}-{f}", started_at=T0 + h * HOUR + 1, feature=f"f{f}", cost=h + f)
        for h in range(0, days * 24, 4) for f in range(features)
    ])  # fmt: skip
    q = SeriesQuery(T0, T0 + days * DAY, "month", group_by="feature", tenant_id="acme")
    got = await store.series(q)
    assert got == expected(await store.ledger(), q)
    assert len(got) == 3 * features  # June, July and August 2025
    if isinstance(store, MemoryReports):
        return  # it folds the entries it holds, one row each: no statement
    # the statement sums per month in SQL: a row per point (per hour, it was 21,600)
    assert rows_read and rows_read[-1] == len(got)
    for tz in ("Europe/Berlin", "America/New_York"):  # whole-hour zones with DST: the same
        zoned = SeriesQuery(T0, T0 + days * DAY, "day", tz=tz, group_by="feature")
        assert await store.series(zoned) == expected(await store.ledger(), zoned)
        assert rows_read[-1] == len(await store.series(zoned))


async def test_a_series_past_its_bounds_is_a_clear_400(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.append_ledger([
        entry(f"r{d}-{f}", started_at=T0 + d * DAY + 1, feature=f"f{f}")
        for d in range(3) for f in range(20)
    ])  # fmt: skip
    q = SeriesQuery(T0, T0 + 3 * DAY, "day", group_by="feature")
    assert len(await store.series(q)) == 60
    monkeypatch.setattr(rollup_rows, "MAX_SERIES_POINTS", 59)
    with pytest.raises(InvalidRequest, match="more than 59 points; narrow the range") as err:
        await store.series(q)
    assert err.value.param == "end" and err.value.status == 400
    if isinstance(store, MemoryReports):
        return
    # a zone whose days start inside a UTC hour is summed per hour: bounded by its rows
    monkeypatch.setattr(rollup_rows, "MAX_SERIES_POINTS", 10_000)
    monkeypatch.setattr(rollup_rows, "MAX_SERIES_ROWS", 59)
    kolkata = SeriesQuery(T0, T0 + 3 * DAY, "month", tz="Asia/Kolkata", group_by="feature")
    with pytest.raises(InvalidRequest, match="more than 59 hourly rows"):
        await store.series(kolkata)


async def test_money_sums_past_2_to_the_63_are_exact(store: Any) -> None:
    big = 2**63 - 7  # each rollup row holds less than 2**63; their sum does not
    await store.append_ledger([
        entry("r1", started_at=T0 + 1, cost=big, revenue=big - 1, feature="a"),
        entry("r2", started_at=T0 + DAY + 1, cost=big, revenue=big, feature="b"),
        entry("r3", started_at=T0 + 2 * DAY + 7200, cost=5, revenue=6, feature="a"),
    ])  # fmt: skip
    for kw in ({}, {"group_by": "tenant"}, {"bucket": "month", "group_by": "model"}):
        q = SeriesQuery(T0, T0 + 3 * DAY, **{"bucket": "all", **kw})
        (point,) = await store.series(q)
        assert (point.cost, point.revenue) == (2 * big + 5, 2 * big + 5)


async def test_buckets_at_the_calendars_ends_still_answer(store: Any) -> None:
    # bucket starts are computed only where the calendar has them; beyond, per hour
    await store.append_ledger([entry("r1")])
    for lo, hi in ((-1e11, -1e11 + 40 * DAY), (1e11 - 40 * DAY, 1e11)):
        q = SeriesQuery(lo, hi, "month", tz="Europe/Berlin")
        assert await store.series(q) == []
