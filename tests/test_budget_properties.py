"""Property tests of hard budgets: random interleavings of reserve, settle, release, lease
expiry and late settlement against every store; plus unit and property tests of budget
periods (``farebox.core.periods``) and budget helpers (``farebox.core.budgets``)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from farebox.core.budgets import (
    BudgetSpec,
    Hold,
    HoldState,
    affordable_tokens,
    holds,
    merge,
    rollover,
    tightest,
    worst_case,
)
from farebox.core.periods import (
    FOREVER,
    Period,
    PeriodError,
    Window,
    parse_period,
    previous,
    window,
)
from farebox.core.pricing import Price
from farebox.core.records import LedgerEntry, Reservation
from farebox.stores.memory.store import MemoryStore
from farebox.stores.sqlite.store import SQLiteStore

T = TypeVar("T")
T0 = 1_750_032_000.0  # 2025-06-16T00:00:00Z
HOUR = 3_600.0
DAY = 86_400.0
NY = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
UTCZ = ZoneInfo("UTC")
DAYP, WEEKP, MONTHP = parse_period("day"), parse_period("week"), parse_period("month")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


# --- the state machine -------------------------------------------------------------------

LIMITS = {"c0": 30, "c1": 50, "c2": 20}
NAMES = sorted(LIMITS)
HOLDS = {
    c: Hold(
        key=f"tenant:{c}:day", scope="tenant", period="day", name=None, limit=limit,
        bucket=T0, buckets_from=T0, resets_at=T0 + DAY,
    )
    for c, limit in LIMITS.items()
}  # fmt: skip


def ledger_entry(request_id: str, rid: str, cost: int, status: str = "ok") -> LedgerEntry:
    return LedgerEntry(
        request_id=request_id, tenant_id="acme", key_id="k1", endpoint="chat.completions",
        model_requested="m", model_served="m", provider="mock", status=status,
        http_status=200 if status == "ok" else 0, started_at=T0, finished_at=T0 + 1,
        cost=cost, reservation_id=rid,
    )  # fmt: skip


class BudgetMachine(RuleBasedStateMachine):
    """A model of every counter next to a real store; they must agree after every step."""

    def make_store(self, directory: Path) -> Any:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="farebox-budget-prop-"))
        self.store = self.make_store(self.dir)
        self.run(self.store.open())
        self.now = T0
        self.serial = 0
        self.used = dict.fromkeys(NAMES, 0)
        self.reserved = dict.fromkeys(NAMES, 0)
        self.late = dict.fromkeys(NAMES, 0)  # cost settled after its lease was reclaimed
        self.members: dict[str, tuple[str, ...]] = {}  # every reservation that succeeded
        self.live: dict[str, tuple[int, float]] = {}  # id -> (amount, expires_at)
        self.reclaimed: dict[str, int] = {}  # id -> amount
        self.settled: dict[str, int] = {}  # id -> cost

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _pick(self, pool: dict[str, Any], index: int) -> str:
        return sorted(pool)[index % len(pool)]

    def _settle(self, rid: str, cost: int, status: str) -> None:
        self.run(self.store.append_ledger([ledger_entry(f"req-{rid}", rid, cost, status)]))
        self.settled[rid] = cost

    @rule(
        amount=st.integers(1, 25),
        names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True),
        lease=st.integers(1, 10),
    )
    def reserve(self, amount: int, names: list[str], lease: int) -> None:
        self.serial += 1
        rid = f"r{self.serial}"
        fits = all(self.used[c] + self.reserved[c] + amount <= LIMITS[c] for c in names)
        placeholder = ledger_entry(f"req-{rid}", rid, 0, "unsettled")
        res = Reservation(
            rid, amount, tuple(HOLDS[c] for c in names), self.now + lease, placeholder
        )
        outcome = self.run(self.store.reserve(res))
        assert outcome.ok is fits, (outcome, self.used, self.reserved)
        if not fits:
            failed = outcome.failed
            assert failed is not None and failed.hold in res.holds
            assert failed.used + failed.reserved + amount > failed.limit
            return
        for c in names:
            self.reserved[c] += amount
        self.members[rid] = tuple(names)
        self.live[rid] = (amount, self.now + lease)

    @precondition(lambda self: self.live)
    @rule(index=st.integers(0, 1_000), share=st.integers(0, 1_000))
    def settle(self, index: int, share: int) -> None:
        rid = self._pick(self.live, index)
        amount, _ = self.live.pop(rid)
        cost = share % (amount + 1)  # anything from nothing to the whole reservation
        for c in self.members[rid]:
            self.reserved[c] -= amount
            self.used[c] += cost
        self._settle(rid, cost, "ok")

    @precondition(lambda self: self.live)
    @rule(index=st.integers(0, 1_000))
    def release(self, index: int) -> None:
        rid = self._pick(self.live, index)
        amount, _ = self.live.pop(rid)
        for c in self.members[rid]:
            self.reserved[c] -= amount
        self._settle(rid, 0, "error")

    @precondition(lambda self: self.live)
    @rule(index=st.integers(0, 1_000), extra=st.integers(0, 30))
    def extend(self, index: int, extra: int) -> None:
        rid = self._pick(self.live, index)
        amount, _ = self.live[rid]
        self.run(self.store.extend_leases([rid], self.now + extra))
        self.live[rid] = (amount, self.now + extra)

    @rule(advance=st.integers(0, 12))
    def expire(self, advance: int) -> None:
        self.now += advance
        due = {rid for rid, (_, expires_at) in self.live.items() if expires_at < self.now}
        entries = self.run(self.store.reclaim_expired(self.now))
        assert sorted(e.reservation_id or "" for e in entries) == sorted(due)
        assert all(e.status == "unsettled" and e.finished_at == self.now for e in entries)
        for rid in due:
            amount, _ = self.live.pop(rid)
            self.reclaimed[rid] = amount
            for c in self.members[rid]:
                self.reserved[c] -= amount

    @precondition(lambda self: self.reclaimed)
    @rule(index=st.integers(0, 1_000), share=st.integers(0, 1_000))
    def late_settle(self, index: int, share: int) -> None:
        rid = self._pick(self.reclaimed, index)
        amount = self.reclaimed.pop(rid)
        cost = share % (amount + 1)
        for c in self.members[rid]:
            self.used[c] += cost
            self.late[c] += cost
        self._settle(rid, cost, "ok")

    @precondition(lambda self: self.settled)
    @rule(index=st.integers(0, 1_000))
    def settle_again(self, index: int) -> None:
        rid = self._pick(self.settled, index)
        # a retried write of the same entry, and a second entry naming the reservation
        self.run(self.store.append_ledger([ledger_entry(f"req-{rid}", rid, self.settled[rid])]))
        self.run(self.store.append_ledger([ledger_entry(f"dup-{rid}", rid, 0, "error")]))

    @invariant()
    def counters_hold_and_reconcile(self) -> None:
        states = self.run(self.store.budget_states([HOLDS[c] for c in NAMES]))
        ledger = self.run(self.store.ledger())
        cost_of: dict[str, int] = {}
        for e in ledger:
            if e.reservation_id is not None:
                cost_of[e.reservation_id] = cost_of.get(e.reservation_id, 0) + e.cost
        for c, s in zip(NAMES, states, strict=True):
            assert s.used >= 0 and s.reserved >= 0, (c, s)
            assert s.limit == LIMITS[c]
            # the hard guarantee; only a settlement that arrives after its lease was
            # reclaimed (the upstream call was billed anyway) may go past it
            assert s.used + s.reserved <= s.limit + self.late[c], (c, s, self.late[c])
            assert (s.used, s.reserved) == (self.used[c], self.reserved[c]), (c, s)
            # every unit of spend is in the ledger, and nothing else is
            mine = [rid for rid, names in self.members.items() if c in names]
            assert sum(cost_of.get(rid, 0) for rid in mine) == s.used, (c, s, cost_of)
        unsettled = {e.reservation_id for e in ledger if e.status == "unsettled"}
        assert unsettled == set(self.reclaimed)


class MemoryBudgetMachine(BudgetMachine):
    def make_store(self, directory: Path) -> Any:
        return MemoryStore()


class SQLiteBudgetMachine(BudgetMachine):
    def make_store(self, directory: Path) -> Any:
        return SQLiteStore(directory / "prop.db")


TestMemoryBudgetInterleavings = MemoryBudgetMachine.TestCase
TestMemoryBudgetInterleavings.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
TestSQLiteBudgetInterleavings = SQLiteBudgetMachine.TestCase
TestSQLiteBudgetInterleavings.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)


# --- periods: calendar windows ---------------------------------------------------------------


def test_daily_window_new_york() -> None:
    now = utc(2026, 1, 15, 3, 0)  # 22:00 on Jan 14 in New York
    w = window(DAYP, now, NY)
    assert (w.start, w.end) == (utc(2026, 1, 14, 5), utc(2026, 1, 15, 5))
    assert w.bucket == w.start == w.buckets_from
    assert window(DAYP, utc(2026, 1, 15, 5), NY).start == utc(2026, 1, 15, 5)  # local midnight
    assert window(DAYP, utc(2026, 1, 15, 5) - 0.001, NY).start == utc(2026, 1, 14, 5)


def test_daily_window_kolkata_half_hour_offset() -> None:
    w = window(DAYP, utc(2026, 1, 14, 18, 30), KOLKATA)  # 00:00 on Jan 15 in Kolkata
    assert (w.start, w.end) == (utc(2026, 1, 14, 18, 30), utc(2026, 1, 15, 18, 30))
    before = window(DAYP, utc(2026, 1, 14, 18, 29, 59), KOLKATA)
    assert (before.start, before.end) == (utc(2026, 1, 13, 18, 30), utc(2026, 1, 14, 18, 30))
    assert window(DAYP, utc(2026, 1, 15, 12), KOLKATA) == w


def test_daily_window_on_spring_forward_is_23_hours() -> None:
    # 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT
    start, end = utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)
    for instant in (start, utc(2026, 3, 8, 6, 59), utc(2026, 3, 8, 7), utc(2026, 3, 9, 3, 59)):
        w = window(DAYP, instant, NY)
        assert (w.start, w.end) == (start, end), datetime.fromtimestamp(instant, NY)
    assert end - start == 23 * HOUR
    assert window(DAYP, end, NY).start == end
    assert window(DAYP, end, NY).end - end == 24 * HOUR


def test_daily_window_on_fall_back_is_25_hours() -> None:
    # 2026-11-01 in New York: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice
    start, end = utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)
    first_0130, second_0130 = utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)
    assert datetime.fromtimestamp(first_0130, NY).strftime("%H:%M") == "01:30"
    assert datetime.fromtimestamp(second_0130, NY).strftime("%H:%M") == "01:30"
    for instant in (start, first_0130, second_0130, utc(2026, 11, 1, 12), end - 1):
        w = window(DAYP, instant, NY)
        assert (w.start, w.end) == (start, end), datetime.fromtimestamp(instant, NY)
    assert end - start == 25 * HOUR
    assert previous(DAYP, window(DAYP, end, NY), NY) == window(DAYP, start, NY)


def test_daily_window_when_midnight_itself_repeats() -> None:
    """Havana falls back from 01:00 to 00:00 (2025-11-02): 00:30 happens twice, and both
    belong to the same day as the rest of it."""
    havana = ZoneInfo("America/Havana")
    first, second = utc(2025, 11, 2, 4, 30), utc(2025, 11, 2, 5, 30)
    assert datetime.fromtimestamp(first, havana).strftime("%F %H:%M") == "2025-11-02 00:30"
    assert datetime.fromtimestamp(second, havana).strftime("%F %H:%M") == "2025-11-02 00:30"
    noon = window(DAYP, utc(2025, 11, 2, 17), havana)
    assert noon.start == utc(2025, 11, 2, 4)  # the first 00:00
    assert noon.end - noon.start == 25 * HOUR
    assert window(DAYP, first, havana) == noon
    assert window(DAYP, second, havana) == noon  # the second 00:30 is not a new day


def test_weekly_window_starts_monday() -> None:
    thursday = utc(2026, 1, 1, 17)  # 2026-01-01 is a Thursday; 12:00 in New York
    w = window(WEEKP, thursday, NY)
    assert (w.start, w.end) == (utc(2025, 12, 29, 5), utc(2026, 1, 5, 5))
    assert datetime.fromtimestamp(w.start, NY).weekday() == 0
    assert window(WEEKP, utc(2026, 1, 5, 4, 59, 59), NY) == w  # Sunday 23:59:59
    assert window(WEEKP, utc(2026, 1, 5, 5), NY).start == utc(2026, 1, 5, 5)
    dst = window(WEEKP, utc(2026, 3, 8, 12), NY)  # the week of the spring change
    assert (dst.start, dst.end) == (utc(2026, 3, 2, 5), utc(2026, 3, 9, 4))
    assert previous(WEEKP, w, NY) == window(WEEKP, utc(2025, 12, 25), NY)


def test_monthly_window_on_the_first_including_new_year() -> None:
    dec = window(MONTHP, utc(2025, 12, 15), NY)
    assert (dec.start, dec.end) == (utc(2025, 12, 1, 5), utc(2026, 1, 1, 5))
    assert window(MONTHP, utc(2026, 1, 1, 4, 59, 59), NY) == dec  # 23:59:59 on Dec 31
    jan = window(MONTHP, utc(2026, 1, 1, 5), NY)
    assert (jan.start, jan.end) == (utc(2026, 1, 1, 5), utc(2026, 2, 1, 5))
    assert previous(MONTHP, jan, NY) == dec
    march = window(MONTHP, utc(2026, 3, 20), NY)
    assert (march.start, march.end) == (utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))
    feb = window(MONTHP, utc(2028, 2, 29, 12), UTCZ)  # a leap year
    assert (feb.start, feb.end) == (utc(2028, 2, 1), utc(2028, 3, 1))


def test_rolling_window_buckets() -> None:
    hourly = parse_period("rolling:1h")
    assert (hourly.seconds, hourly.bucket_s, hourly.name) == (3600, 60, "rolling:1h")
    w = window(hourly, T0 + 3_725.5, NY)  # T0 is a multiple of 60
    assert w == Window(start=T0 + 180, end=T0 + 3_780, bucket=T0 + 3_720, buckets_from=T0 + 180)
    assert previous(hourly, w, NY) is None
    # spend from exactly one hour ago has left; spend from 59 minutes ago still counts
    assert window(hourly, T0 + 3_725.5 - 3_600, NY).bucket < w.buckets_from
    assert window(hourly, T0 + 3_725.5 - 3_540, NY).bucket == w.buckets_from
    tiny = parse_period("rolling:30s")
    assert tiny.bucket_s == 1 and window(tiny, 100.5, UTCZ) == Window(71.0, 101.0, 100.0, 71.0)


def test_lifetime_window() -> None:
    w = window(parse_period("lifetime"), T0, NY)
    assert w == Window(0.0, FOREVER, 0.0, 0.0)
    assert window(parse_period("lifetime"), T0 + 10 * 365 * DAY, KOLKATA) == w
    assert previous(parse_period("lifetime"), w, NY) is None


@pytest.mark.parametrize(
    ("text", "kind", "seconds", "name"),
    [
        ("day", "day", 0, "day"),
        ("week", "week", 0, "week"),
        ("month", "month", 0, "month"),
        ("lifetime", "lifetime", 0, "lifetime"),
        ("rolling:90m", "rolling", 5_400, "rolling:90m"),
        ("rolling:120m", "rolling", 7_200, "rolling:2h"),
        ("rolling:7d", "rolling", 604_800, "rolling:7d"),
        ("rolling:45s", "rolling", 45, "rolling:45s"),
    ],
)
def test_parse_period(text: str, kind: str, seconds: int, name: str) -> None:
    period = parse_period(text)
    assert period == Period(kind, seconds)
    assert period.name == name
    assert parse_period(period.name) == period


@pytest.mark.parametrize(
    "text", ["year", "", "rolling:", "rolling:0h", "rolling:5x", "rolling:-1h", "Day", "rolling:1"]
)
def test_parse_period_rejects(text: str) -> None:
    with pytest.raises(PeriodError):
        parse_period(text)


ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Europe/London", "Australia/Lord_Howe"]


@settings(max_examples=300, deadline=None)
@given(
    micros=st.integers(int(utc(2020, 1, 1)) * 10**6, int(utc(2035, 1, 1)) * 10**6),
    zone_name=st.sampled_from(ZONES),
    period=st.sampled_from([DAYP, WEEKP, MONTHP]),
)
def test_calendar_windows_tile_time(micros: int, zone_name: str, period: Period) -> None:
    now = micros / 10**6  # a clock reading; sub-microsecond readings are tested below
    zone = ZoneInfo(zone_name)
    w = window(period, now, zone)
    assert w.start <= now < w.end
    assert w.bucket == w.start == w.buckets_from
    local_start, local_now = (
        datetime.fromtimestamp(w.start, zone),
        datetime.fromtimestamp(now, zone),
    )
    assert (local_start.hour, local_start.minute, local_start.second) == (0, 0, 0)
    if period == DAYP:
        assert local_start.date() == local_now.date()
        assert 23 * HOUR <= w.end - w.start <= 25 * HOUR
    elif period == WEEKP:
        assert local_start.weekday() == 0
        assert local_start.date() <= local_now.date() < local_start.date() + timedelta(days=7)
    else:
        assert local_start.day == 1
        assert (local_start.year, local_start.month) == (local_now.year, local_now.month)
    # the next window starts where this one ends, and this one is the next one's previous
    following = window(period, w.end, zone)
    assert following.start == w.end
    assert previous(period, following, zone) == w
    assert window(period, w.start, zone) == w


def test_window_contains_a_reading_just_before_midnight() -> None:
    """``time.time()`` has sub-microsecond resolution; a reading a fraction of a microsecond
    before midnight still belongs to the window that ends at midnight."""
    midnight = utc(2035, 1, 1, 5)  # 00:00 in New York
    now = midnight - 2.5e-7  # just below; datetime.fromtimestamp rounds it up to midnight
    assert now < midnight
    w = window(DAYP, now, NY)
    assert w.start <= now < w.end
    assert w.end == midnight


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.integers(1, 40 * 86_400),
    now=st.floats(0, 4e9, allow_nan=False),
)
def test_rolling_windows(seconds: int, now: float) -> None:
    period = Period("rolling", seconds)
    w = window(period, now, UTCZ)
    size = period.bucket_s
    assert w.bucket <= now < w.bucket + size == w.end
    assert w.bucket % size == 0
    count = (w.bucket - w.buckets_from) / size + 1
    assert count == seconds // size
    assert seconds - size < count * size <= seconds  # never longer than asked
    later = window(period, w.end, UTCZ)
    assert later.buckets_from == w.buckets_from + size


# --- budgets: scopes, overrides, weights ---------------------------------------------------------


def spec(scope: str, period: Period, limit: int, **kw: Any) -> BudgetSpec:
    return BudgetSpec(scope, period, limit, **kw)


def scoped(specs: list[BudgetSpec], **kw: Any) -> dict[str, Hold]:
    now = kw.pop("now", utc(2026, 1, 15, 12))
    args: dict[str, Any] = {"tenant": "acme", "key": "k1", "feature": None, "user": None}
    args.update(kw)
    out = holds(specs, now=now, zone=NY, **args)
    return {h.key: h for h in out}


SCOPED = [
    spec("tenant", DAYP, 1_000),
    spec("key", DAYP, 500),
    spec("feature", DAYP, 300),
    spec("feature", MONTHP, 2_000, name="search"),
    spec("user", WEEKP, 50),
    spec("global", DAYP, 10**9),
]


def test_holds_for_each_scope() -> None:
    got = scoped(SCOPED)
    assert sorted(got) == ["global:day", "key:k1:day", "tenant:acme:day"]
    got = scoped(SCOPED, feature="chat", user="u1")
    assert sorted(got) == [
        "feature:acme:chat:day",
        "global:day",
        "key:k1:day",
        "tenant:acme:day",
        "user:acme:u1:week",
    ]
    chat = got["feature:acme:chat:day"]
    assert (chat.scope, chat.name, chat.period, chat.limit) == ("feature", "chat", "day", 300)
    assert got["user:acme:u1:week"].name == "u1"
    assert got["tenant:acme:day"].name is None
    day = window(DAYP, utc(2026, 1, 15, 12), NY)
    assert (chat.bucket, chat.buckets_from, chat.resets_at) == (day.bucket, day.start, day.end)
    assert got["user:acme:u1:week"].resets_at == window(WEEKP, utc(2026, 1, 15, 12), NY).end


def test_named_budget_applies_only_to_its_name() -> None:
    search = scoped(SCOPED, feature="search")
    assert search["feature:acme:search:month"].limit == 2_000
    assert search["feature:acme:search:day"].limit == 300  # the per-feature budget too
    assert "feature:acme:search:month" not in scoped(SCOPED, feature="chat")
    # the same names in another tenant are other counters
    other = scoped(SCOPED, tenant="globex", key="k9", feature="search")
    assert "feature:globex:search:month" in other and "tenant:globex:day" in other
    assert "global:day" in other  # the global cap is shared


def test_named_and_generic_budget_of_one_subject_are_one_counter() -> None:
    """A per-user default and one user's own budget name the same counter: a request must
    reserve against it once, so its cost is counted once."""
    specs = [spec("user", DAYP, 40), spec("user", DAYP, 50, name="u1")]
    out = holds(specs, tenant="acme", key="k1", feature=None, user="u1", now=T0, zone=UTCZ)
    keys = [h.key for h in out]
    assert keys and len(keys) == len(set(keys)), keys
    store = MemoryStore()
    placeholder = ledger_entry("q", "r", 0, "unsettled")

    async def spend() -> list[int]:
        assert (await store.reserve(Reservation("r", 30, tuple(out), T0 + 60, placeholder))).ok
        await store.append_ledger([ledger_entry("q", "r", 30)])
        return [s.used for s in await store.budget_states(out)]

    assert asyncio.run(spend()) == [30] * len(out)


def test_merge_later_layers_replace_same_scope_period_and_name() -> None:
    plan = [spec("tenant", DAYP, 100), spec("tenant", MONTHP, 1_000), spec("feature", DAYP, 10)]
    tenant_layer = [spec("tenant", DAYP, 50), spec("feature", DAYP, 20, name="search")]
    key_layer = [spec("tenant", DAYP, 70, increase=5)]
    merged = merge(plan, tenant_layer, key_layer)
    by_ident = {s.ident: s for s in merged}
    assert len(merged) == len(by_ident) == 4
    assert by_ident[("tenant", "day", None)].limit == 70
    assert by_ident[("tenant", "day", None)].increase == 5
    assert by_ident[("tenant", "month", None)].limit == 1_000
    assert by_ident[("feature", "day", None)].limit == 10  # a named budget is another budget
    assert by_ident[("feature", "day", "search")].limit == 20
    assert merge(plan) == plan
    assert [s.limit for s in merge(plan, [], [])] == [100, 1_000, 10]


def test_temporary_increase_raises_limit_but_not_rollover_base() -> None:
    specs = [spec("tenant", DAYP, 1_000, increase=250, rollover_cap=100)]
    (h,) = holds(specs, tenant="acme", key="k1", feature=None, user=None, now=T0, zone=UTCZ)
    assert (h.limit, h.base_limit, h.rollover_cap) == (1_250, 1_000, 100)
    assert h.rollover_bucket == T0 - DAY
    assert rollover(h, 0) == 100 and rollover(h, 950) == 50 and rollover(h, 5_000) == 0
    no_cap = holds(
        [spec("tenant", DAYP, 1_000)], tenant="a", key="k", feature=None, user=None, now=T0,
        zone=UTCZ,
    )  # fmt: skip
    assert no_cap[0].rollover_bucket is None and rollover(no_cap[0], 0) == 0


@pytest.mark.parametrize(
    ("weight", "expected"),
    [((1, 4), 250), ((1, 3), 333), ((2, 3), 667), ((1, 1), 1_000), ((0, 5), 0), ((1, 8), 125)],
)
def test_weighted_feature_budget_is_a_share_of_the_tenant_budget(
    weight: tuple[int, int], expected: int
) -> None:
    specs = [
        spec("tenant", DAYP, 1_000),
        spec("tenant", MONTHP, 40_000),
        spec("feature", DAYP, 1, weight=weight),
    ]
    got = scoped(specs, feature="search")
    assert got["feature:acme:search:day"].limit == expected


def test_weight_uses_the_tenant_budget_of_the_same_period_with_its_increase() -> None:
    specs = [
        spec("tenant", MONTHP, 30_000, increase=3_000),
        spec("tenant", DAYP, 1_000),
        spec("feature", MONTHP, 1, weight=(1, 10), increase=7),
    ]
    got = scoped(specs, feature="chat")
    assert got["feature:acme:chat:month"].limit == 3_300 + 7
    assert got["feature:acme:chat:month"].base_limit == 3_300
    # without a tenant budget of that period, the weight applies to the spec's own limit
    alone = scoped([spec("feature", WEEKP, 800, weight=(1, 4))], feature="chat")
    assert alone["feature:acme:chat:week"].limit == 200


# --- budgets: worst case and what fits -----------------------------------------------------------

CHEAP = Price(input=2, output=8, cached_input=1, cache_write_5m=3, cache_write_1h=4)
PRICEY_IN = Price(input=5, output=1, cached_input=5, cache_write_5m=5, cache_write_1h=5)
FREE_OUT = Price(input=3, output=0, cached_input=3, cache_write_5m=3, cache_write_1h=3)


def test_worst_case_is_the_dearest_deployment_with_cache_writes() -> None:
    # cache writes cost more than plain input: every input token is priced at the dearest
    assert worst_case([CHEAP], 100, 50) == 100 * 4 + 50 * 8
    assert worst_case([PRICEY_IN], 100, 50) == 100 * 5 + 50 * 1
    assert worst_case([CHEAP, PRICEY_IN], 100, 50) == 800
    assert worst_case([CHEAP, PRICEY_IN], 100, 5) == 505  # now the other one is dearer
    assert worst_case([CHEAP], 0, 0) == 0


def test_affordable_tokens_with_several_prices() -> None:
    room = 1_000
    # CHEAP: (1000 - 400) // 8 = 75; PRICEY_IN: (1000 - 500) // 1 = 500 -> 75
    assert affordable_tokens([CHEAP, PRICEY_IN], 100, room) == 75
    assert worst_case([CHEAP, PRICEY_IN], 100, 75) <= room < worst_case([CHEAP, PRICEY_IN], 100, 76)
    assert affordable_tokens([PRICEY_IN], 100, room) == 500
    assert affordable_tokens([CHEAP], 300, room) == 0  # the input alone exceeds the room
    assert affordable_tokens([CHEAP], 250, room) == 0  # exactly the input, nothing left
    assert affordable_tokens([FREE_OUT], 100, room) == 1 << 30  # output costs nothing
    assert affordable_tokens([FREE_OUT], 400, room) == 0
    assert affordable_tokens([FREE_OUT, CHEAP], 100, room) == 75
    assert affordable_tokens([], 100, room) == 0


prices = st.builds(
    Price,
    input=st.integers(0, 10**7),
    output=st.integers(1, 10**7),
    cached_input=st.integers(0, 10**7),
    cache_write_5m=st.integers(0, 10**7),
    cache_write_1h=st.integers(0, 10**7),
)


@settings(max_examples=300, deadline=None)
@given(
    price_list=st.lists(prices, min_size=1, max_size=4),
    input_tokens=st.integers(0, 200_000),
    room=st.integers(0, 10**13),
)
def test_affordable_tokens_is_the_largest_that_fits(
    price_list: list[Price], input_tokens: int, room: int
) -> None:
    tokens = affordable_tokens(price_list, input_tokens, room)
    assert tokens >= 0
    if worst_case(price_list, input_tokens, 0) > room:
        assert tokens == 0
    else:
        assert worst_case(price_list, input_tokens, tokens) <= room
        assert worst_case(price_list, input_tokens, tokens + 1) > room


def test_tightest_picks_least_remaining() -> None:
    a, b = HOLDS["c0"], HOLDS["c1"]
    states = [HoldState(a, 10, 5, 30), HoldState(b, 0, 45, 50)]
    best = tightest(states)
    assert best is not None and best.hold == b and best.remaining == 5
    assert HoldState(a, 40, 0, 30).remaining == 0  # over the limit is no room, not negative
    assert tightest([]) is None
