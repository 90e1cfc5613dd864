"""The ``ReportStore.cache_tallies`` contract, on every backend: per tenant, the response
cache's hits (status ``cache_hit``), misses (``cache`` = ``miss``) and USD saved over a range,
read from the rollups on the SQL stores, equal ``core.cache.tally_entries`` over the entries the
ledger holds, exactly: whatever wrote, replaced or ignored them (batches, repeated request ids,
placeholders and the entries that replace them, leases reclaimed and settled late), with
savings near 2**62 that add up beyond 2**63, for hour-aligned (and cut) windows.

(The Redis Cluster backend is left out: its ledger and rollups are PostgreSQL's, as on the
``postgres+redis`` backend, which runs.)"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.cache import BYPASS, HIT_EXACT, HIT_SEMANTIC, HIT_STATUS, MISS, tally_entries
from farebox.core.records import SeriesQuery
from tests.contracts.backends import CLUSTER, EVERY
from tests.contracts.builders import DAY, T0, entry, play_ledger

BACKENDS = tuple(n for n in EVERY if n != CLUSTER)
HOUR = 3600
BIG = 2**62
EXAMPLES = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
RUNS = itertools.count()

# a hit's savings: small, or near 2**62 (at most one such hit per day and hour of the ledger,
# as a rollup row is an int64 on SQLite: the sums over several rows pass 2**63)
small = st.integers(0, 10**12)
fields = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["a", "b", "c"]),
        "key_id": st.sampled_from(["k1", "k2"]),
        "model_served": st.sampled_from(["m1", "m2"]),
        "feature": st.sampled_from([None, "f1"]),
        "status": st.sampled_from([HIT_STATUS, HIT_STATUS, "ok", "error", "cancelled"]),
        "http_status": st.sampled_from([200, 200, 429, 500]),
        "cache": st.sampled_from([None, HIT_EXACT, HIT_SEMANTIC, MISS, MISS, BYPASS]),
        "saved": small,
        "big": st.booleans(),
        "day": st.integers(0, 9),
        # anywhere in the day, or in its first two hours (which windows often cut)
        "second": st.one_of(st.integers(0, int(DAY) - 1), st.integers(0, 2 * HOUR)),
        "cost": st.integers(0, 10**9),
    }
)
operation = st.tuples(
    st.sampled_from(["append", "append", "repeat", "placeholder", "lease"]), fields
)
# windows: whole hours (some whole days), or cut anywhere, inside or around the ten days
edge = st.one_of(
    st.integers(-30, 11 * 24).map(lambda h: T0 + h * HOUR),
    st.integers(-1, 11).map(lambda d: T0 + d * DAY),
    st.tuples(st.integers(0, 10), st.integers(1, 2 * HOUR)).map(lambda x: T0 + x[0] * DAY + x[1]),
    st.floats(T0 - DAY, T0 + 11 * DAY, allow_nan=False),
)
window = st.tuples(st.one_of(st.none(), edge), st.one_of(st.none(), edge))


def realised(base: float, n: int, kind: str, f: dict[str, Any], bigs: set[int]) -> dict[str, Any]:
    """The entry fields of a drawn operation: a big saving (near 2**62) only for a new hit
    (appended, or replacing a placeholder), only on a day no other big one has, at an hour of
    its own. Times are from ``base`` on: each example has days of its own (the store lives
    through the examples)."""
    out = {k: v for k, v in f.items() if k not in ("big", "day", "second")}
    day = f["day"]
    new = kind in ("append", "placeholder")
    if new and f["big"] and f["status"] == HIT_STATUS and day not in bigs:
        bigs.add(day)
        out["saved"] = BIG - n
        out["started_at"] = base + day * DAY + HOUR * (day % 24)
    else:
        out["started_at"] = base + day * DAY + f["second"] + 0.25
    return out


async def play(store: Any, run: int, base: float, ops: list[tuple[str, dict[str, Any]]]) -> None:
    """Each operation as the gateway would do it (``builders.play_ledger``): a batch entry,
    a repeat of an earlier request id (a miss, ignored), a placeholder (a miss, say) replaced
    by its real entry, or a lease reclaimed (its placeholder written) then settled late."""
    bigs: set[int] = set()
    realised_ops = [(kind, realised(base, n, kind, f, bigs)) for n, (kind, f) in enumerate(ops)]
    stub = {"cache": MISS, "saved": 7}
    await play_ledger(store, run, realised_ops, repeat=lambda f: {"cache": MISS}, stub=stub)


@given(ops=st.lists(operation, max_size=24), asked=st.lists(window, min_size=1, max_size=4))
@EXAMPLES
async def test_tallies_equal_the_ledgers(
    store: Any, ops: list[tuple[str, dict[str, Any]]], asked: list[tuple[Any, Any]]
) -> None:
    run = next(RUNS)
    base = T0 + run * 16 * DAY
    await play(store, run, base, ops)
    entries = await store.ledger()
    for start, end in ((s, e) for s, e in asked):
        start = None if start is None else start - T0 + base
        end = None if end is None else end - T0 + base
        for tenant in (None, "a", "nobody"):
            want = tally_entries(entries, tenant, start, end)
            assert await store.cache_tallies(tenant, start, end) == want, (tenant, start, end)


async def test_savings_add_up_beyond_2_63_per_tenant(store: Any) -> None:
    hits = [
        entry(f"h{d}", status=HIT_STATUS, cache=HIT_EXACT, saved=BIG + d, started_at=T0 + d * DAY)
        for d in range(5)
    ]
    misses = [entry(f"m{i}", cache=MISS, started_at=T0 + i * HOUR) for i in range(3)]
    other = [
        entry("x1", cache=BYPASS, saved=99),  # not a lookup, but what it saved counts
        entry("x2", tenant_id="other", saved=5),  # no cache traffic at all: no tally
        entry("x3", tenant_id="b", cache=HIT_SEMANTIC, saved=3),  # hit-like but not a hit
    ]
    await store.append_ledger(hits + misses + other)
    (t,) = await store.cache_tallies(None, T0, T0 + 7 * DAY)
    assert (t.tenant_id, t.hits, t.misses, t.saved) == ("acme", 5, 3, 5 * BIG + 10 + 99)
    assert t.saved > 2**63 and t.hit_rate == (5, 8)
    (t,) = await store.cache_tallies("acme", T0 + DAY, T0 + 3 * DAY)
    assert (t.hits, t.misses, t.saved) == (2, 0, 2 * BIG + 3)
    assert await store.cache_tallies("other", None, None) == []


async def test_a_placeholder_replaced_leaves_no_miss_behind(store: Any) -> None:
    await store.append_ledger([entry("r1", status="unsettled", http_status=0, cache=MISS)])
    assert [(t.hits, t.misses) for t in await store.cache_tallies("acme", T0, T0 + DAY)] == [(0, 1)]
    real = entry("r1", status=HIT_STATUS, cache=HIT_EXACT, saved=BIG)
    await store.append_ledger([real])
    want = tally_entries(await store.ledger(), "acme", T0, T0 + DAY)
    assert await store.cache_tallies("acme", T0, T0 + DAY) == want


async def test_series_points_carry_saved_and_misses(store: Any) -> None:
    await store.append_ledger([
        entry("h1", status=HIT_STATUS, cache=HIT_EXACT, saved=BIG, started_at=T0 + 10),
        entry("h2", status=HIT_STATUS, cache=HIT_SEMANTIC, saved=BIG + 1, started_at=T0 + DAY),
        entry("m1", cache=MISS, started_at=T0 + 20, cost=4),
    ])  # fmt: skip
    by_status = SeriesQuery(T0, T0 + 2 * DAY, bucket="all", group_by="status")
    got = [(p.group, p.requests, p.saved, p.cache_misses) for p in await store.series(by_status)]
    assert got == [(HIT_STATUS, 2, 2 * BIG + 1, 0), ("ok", 1, 0, 1)]


async def test_cut_hours_at_both_ends_are_read_exactly(store: Any) -> None:
    times = [T0 + 10, T0 + 1800, T0 + HOUR + 5, T0 + DAY + 1799, T0 + DAY + 1800, T0 + DAY + HOUR]
    await store.append_ledger(
        [
            entry(f"h{i}", status=HIT_STATUS, cache=HIT_EXACT, saved=BIG // 4 + i, started_at=t)
            for i, t in enumerate(times)
        ]
        + [entry(f"m{i}", cache=MISS, started_at=t + 0.5) for i, t in enumerate(times)]
    )
    entries = await store.ledger()
    for start, end in (
        (T0 + 1800, T0 + DAY + 1800),  # half of the first hour, a day, half of the last
        (T0 + 5, T0 + 1801),  # inside one hour
        (T0 + 1800, None),
        (None, T0 + DAY + 1800.25),
        (T0, T0 + DAY + HOUR),  # whole hours
    ):
        want = tally_entries(entries, "acme", start, end)
        assert want and await store.cache_tallies("acme", start, end) == want, (start, end)
