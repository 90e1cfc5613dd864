"""Hourly rollups of the ledger, as the SQL stores keep and read them (``ReportStore.series``).

One rollup row per (UTC hour of ``started_at``, tenant, key, model served, feature, status)
holds the sums of that hour's entries. Both SQL stores keep it with database triggers on the
ledger (``AFTER INSERT``, ``UPDATE`` and ``DELETE``): every path that writes, replaces or
removes a ledger row (a batch, a reclaimed lease's placeholder, a late settlement replacing
it, a repeated request id ignored) changes the rollups in the same statement and the same
transaction, so a rollup sum equals the ledger sum exactly, even after a crash. A ledger-free
entry never reaches the ledger, so never reaches a rollup. (What would bypass the triggers, and
so must never be used on the ledger: SQLite's ``INSERT OR REPLACE`` without recursive
triggers, and PostgreSQL's ``TRUNCATE``.)

Exactness: counts, tokens and money are integers; latency sums are kept in whole
microseconds (each entry's ``latency_ms`` and ``upstream_ms`` rounded half up to the
microsecond, ``entry_values`` below), so they are exact too, in whatever order rows add up.
A NULL feature is kept as the empty text (part of the key) and read back as None.

A query reads the rollup rows of the whole hours inside ``[start, end)`` and, for the hour
at either end that the range cuts, the entries of that part of the hour only (at most two
partial hours, by the ledger's time index): the answer is exact for any range. Buckets:
an hour is counted in the bucket (of the query's time zone's wall clock) its start falls in.
For zones whose offset is a whole number of hours, that is exact; for the others (India's
+05:30, Nepal's +05:45...) a day or month starts at the first whole UTC hour inside it, and
an ``hour`` bucket is the UTC hour.

Bounds: the statement (``stores/rollup_sql.py``) sums per bucket in SQL (``bucket_sql``), not
per hour, wherever its zone's days start on whole UTC hours (UTC, whole-hour offsets, their DST
changes), so the rows it returns are about the points it answers; the rows are read one at a
time and folded with a bound (``Fold``): a series of more than ``MAX_SERIES_POINTS`` points, or
that reads more than ``MAX_SERIES_ROWS`` rows, is refused with a 400 (``InvalidRequest``, param
``end``) as soon as it passes either. Money sums are exact beyond 2**63 on SQLite too
(``RollupSQL.split_money``).

The response cache's sums (``CACHE_SUMS``, a later migration): ``saved`` (money, what hits
saved) and ``cache_misses`` (entries whose ``cache`` is ``miss``); hits are the ``requests`` of
status ``cache_hit``, so a tenant's cache tallies read a few daily rows (``cache_tallies.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from farebox.core.cache import MISS
from farebox.core.records import (
    LATENCY_BOUNDS_MS,
    ROLLUP_DIMENSIONS,
    LedgerEntry,
    SeriesPoint,
    SeriesQuery,
    UsageQuery,
    UsageRow,
)
from farebox.errors import InvalidRequest

HOUR = 3600
MAX_SERIES_POINTS = 20_000  # (bucket, group) points one series may answer; more is a 400
MAX_SERIES_ROWS = 250_000  # rows one series statement may return; more is a 400
MAX_BOUNDARIES = 4_000  # bucket starts passed to SQL (2 placeholders each); beyond: per hour
SPLIT = 2**32  # SQLite sums money as (high, low) 32-bit halves: exact beyond 2**63
MAX_MS = 1e12  # latencies are clamped to +-MAX_MS before they are summed
LIMIT_S = 1e11  # the times a query may name (the year 5138): beyond, no calendar answers
Bucket = Literal["hour", "day", "month", "all"]
BUCKETS = ("hour", "day", "month", "all")
UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Zulu",
                       "Etc/Zulu", "GMT", "Etc/GMT", "Etc/GMT0", "Etc/GMT+0", "Etc/GMT-0",
                       "GMT0", "GMT+0", "GMT-0", "Etc/Greenwich", "Greenwich"})  # fmt: skip
KEY = ("hour", "tenant_id", "key_id", "model", "feature", "status")
# the daily rollups: per UTC day (its start, in the column ``hour``), tenant and status only,
# so that a month's totals per tenant read a few rows per tenant whatever its traffic's shape
DAILY_KEY = ("hour", "tenant_id", "status")
# the totals: per hour and status, over every tenant (spread over a few shards on PostgreSQL
# so that concurrent replicas do not queue on one row), for series neither grouped nor
# filtered by tenant, key, model or feature, in any zone's days and months
TOTAL_KEY = ("hour", "status", "shard")
DAY = 86_400
Grain = Literal["hourly", "daily", "total"]
GRAINS: tuple[Grain, ...] = ("hourly", "daily", "total")
_KEYS: dict[str, tuple[str, ...]] = {"hourly": KEY, "daily": DAILY_KEY, "total": TOTAL_KEY}
_TABLES = {"hourly": "rollups", "daily": "rollups_daily", "total": "rollups_total"}
LATENCY_COLS = tuple(f"lb{i}" for i in range(len(LATENCY_BOUNDS_MS) + 1))
# the sums of the first rollup migration (its triggers and backfill keep these only)
SUMS_V1 = (
    "requests", "errors", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens", "cost", "revenue", "latency_us", "upstream_us",
    *LATENCY_COLS,
)  # fmt: skip
# the response cache's sums (a later migration): what hits saved (money), and the entries
# the cache missed (``cache`` = ``miss``); hits are the requests of status ``cache_hit``
CACHE_SUMS = ("saved", "cache_misses")
SUMS = SUMS_V1 + CACHE_SUMS
MONEY = ("cost", "revenue", "saved")  # in ``SUMS`` order
DIMENSION_COLUMN = {"tenant": "tenant_id", "key": "key_id", "model": "model",
                    "feature": "feature", "status": "status"}  # fmt: skip
# (the query's field, the rollup's column)
FILTERS = (("tenant_id", "tenant_id"), ("key_id", "key_id"), ("model", "model"),
           ("feature", "feature"), ("status", "status"))  # fmt: skip


def hour_of(started_at: float) -> int:
    """The rollup hour of an entry: its ``started_at`` truncated to the UTC hour, exactly as
    the SQL of both stores computes it (float division, then truncation toward zero)."""
    return int(started_at / 3600.0) * HOUR


def micros(ms: float) -> int:
    """Milliseconds as whole microseconds, rounded half up (truncation of ``x * 1000 + 0.5``,
    as SQLite's CAST and PostgreSQL's trunc compute it), first clamped to +-1e12 ms (NaN,
    which PostgreSQL sorts above every number, to the top), so that no value a ledger row can
    hold fails the row's write."""
    if ms != ms:
        ms = MAX_MS
    return int(min(max(ms, -MAX_MS), MAX_MS) * 1000 + 0.5)


def latency_bucket(ms: float) -> int:
    """The index of the histogram bucket ``ms`` is counted in (the last: +inf)."""
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


def entry_key(e: LedgerEntry) -> tuple[Any, ...]:
    return (hour_of(e.started_at), e.tenant_id, e.key_id, e.model_served, e.feature or "",
            e.status)  # fmt: skip


def entry_values(e: LedgerEntry) -> list[int]:
    """The entry's contribution to its rollup row, in ``SUMS`` order."""
    lat = [0] * len(LATENCY_COLS)
    lat[latency_bucket(e.latency_ms)] = 1
    return [1, int(e.http_status >= 400), e.input_tokens, e.cached_input_tokens,
            e.cache_write_5m_tokens + e.cache_write_1h_tokens, e.output_tokens,
            e.reasoning_tokens, e.cost, e.revenue, micros(e.latency_ms), micros(e.upstream_ms),
            *lat, e.saved, int(e.cache == MISS)]  # fmt: skip


def key_of(grain: Grain) -> tuple[str, ...]:
    return _KEYS[grain]


def table_of(grain: Grain) -> str:
    return _TABLES[grain]


def check(query: SeriesQuery) -> None:
    """A clear 4xx for what ``series`` cannot answer."""
    if query.bucket not in BUCKETS:
        raise InvalidRequest(f"bucket must be one of {', '.join(BUCKETS)}", param="bucket")
    if query.group_by is not None and query.group_by not in ROLLUP_DIMENSIONS:
        dims = ", ".join(ROLLUP_DIMENSIONS)
        raise InvalidRequest(f"group_by must be one of {dims}", param="group_by")
    for name in ("start", "end"):
        value = getattr(query, name)
        if not (math.isfinite(value) and -LIMIT_S <= value <= LIMIT_S):
            raise InvalidRequest(f"{name} must be a unix time within {LIMIT_S:.0e} s", param=name)
    zone(query.tz)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidRequest(f"unknown time zone {name!r} (an IANA name)", param="tz") from None


def bucket_starts(query: SeriesQuery, lo: int, hi: int) -> list[int] | None:
    """The starts of the day or month buckets covering the hours ``[lo, hi)``, as
    ``bucketer`` places each hour, or None when one is not a whole UTC hour (a zone of
    +05:30...), or there are more than ``MAX_BOUNDARIES``."""
    bucket_of, tz = bucketer(query), zone(query.tz)
    start = bucket_of(lo)
    out: list[int] = []
    while start < hi:
        if start % HOUR or len(out) >= MAX_BOUNDARIES:
            return None
        out.append(int(start))
        day = datetime.fromtimestamp(start, tz).date()
        after = _next(day, query.bucket)
        nxt = bucket_of(math.ceil(datetime.combine(after, time(0), tzinfo=tz).timestamp() / HOUR)
                        * HOUR)  # fmt: skip
        # bucketer never decreases: the hours between two starts are in the first's bucket
        if nxt <= start or nxt % HOUR or bucket_of(int(nxt) - HOUR) != start:
            return None
        start = nxt
    return out


def _next(day: date, bucket: str) -> date:
    if bucket == "day":
        return day + timedelta(days=1)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


# --- buckets and points --------------------------------------------------------------------


def bucketer(query: SeriesQuery) -> Callable[[int | None], float]:
    """Maps an hour (None for ``all``) to the start of its bucket in the query's zone."""
    tz = zone(query.tz)
    cache: dict[int | None, float] = {}

    def start_of(hour: int | None) -> float:
        if hour is None or query.bucket == "all":
            return float(query.start)
        if query.bucket == "hour":
            return float(hour)
        local = datetime.fromtimestamp(hour, tz)
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if query.bucket == "month":
            local = local.replace(day=1)
        return local.timestamp()

    def cached(hour: int | None) -> float:
        if hour not in cache:
            cache[hour] = start_of(hour)
        return cache[hour]

    return cached


class Fold:
    """Rows of (bucket start or hour or None, group, sums in ``SUMS`` order; money as two
    halves when ``split``), summed per bucket and group as they come, refused (a 400) as soon
    as they hold more than ``MAX_SERIES_POINTS`` points or more than ``MAX_SERIES_ROWS`` rows
    were read (unless not ``rows_bound``: rows already in memory)."""

    def __init__(self, query: SeriesQuery, split: bool = False, rows_bound: bool = True) -> None:
        self.query, self.split = query, split
        self.max_rows = MAX_SERIES_ROWS if rows_bound else None
        self.max_points = MAX_SERIES_POINTS
        self.rows = 0
        self._bucket_of = bucketer(query)
        self._sums: dict[tuple[float, str | None], list[int]] = {}
        self._money = [SUMS.index(c) for c in MONEY]

    def add(self, row: Sequence[Any]) -> None:
        self.rows += 1
        if self.max_rows is not None and self.rows > self.max_rows:
            raise self._too_big(f"read more than {self.max_rows} hourly rows")
        group = row[1]
        if self.query.group_by == "feature" and group == "":
            group = None
        slot = (self._bucket_of(None if row[0] is None else int(row[0])), group)
        values = self._values(row[2:])
        have = self._sums.get(slot)
        if have is not None:
            for i, v in enumerate(values):
                have[i] += v
            return
        self._sums[slot] = values
        if len(self._sums) > self.max_points:
            raise self._too_big(f"have more than {self.max_points} points")

    def _values(self, cols: Sequence[Any]) -> list[int]:
        values = [v if type(v) is int else _exact(v) for v in cols]  # ints: the common case
        if not self.split:
            return values
        for i in self._money:  # (high, low) at i, i + 1: the columns after i shift by one
            values[i : i + 2] = [values[i] * SPLIT + values[i + 1]]
        return values

    def _too_big(self, what: str) -> InvalidRequest:
        return InvalidRequest(
            f"This series would {what}; narrow the range, use a larger bucket or filter it.",
            param="end",
        )

    def points(self) -> list[SeriesPoint]:
        """Oldest bucket first, then by group (None last); groups of no entries (a
        placeholder replaced) left out."""
        ordered = sorted(
            self._sums.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or "")
        )
        return [_point(b, g, v) for (b, g), v in ordered if v[0] != 0]


def points(
    query: SeriesQuery, rows: Iterable[Sequence[Any]], split: bool = False,
    rows_bound: bool = True,
) -> list[SeriesPoint]:  # fmt: skip
    """The rows (as ``Fold`` takes them) as the series' points."""
    fold = Fold(query, split, rows_bound)
    for row in rows:
        fold.add(row)
    return fold.points()


def _exact(value: Any) -> int:
    if value is None:
        return 0
    exact = int(value)  # one conversion, then one comparison (PostgreSQL's sums are Decimal)
    if exact != value:
        raise ValueError(f"non-integral sum {value}")
    return exact


_LATENCY_AT = SUMS.index(LATENCY_COLS[0])
_SAVED_AT = SUMS.index("saved")


def _point(bucket: float, group: str | None, v: list[int]) -> SeriesPoint:
    lat = _LATENCY_AT
    return SeriesPoint(
        bucket=bucket, group=group, requests=v[0], errors=v[1], input_tokens=v[2],
        cached_input_tokens=v[3], cache_write_tokens=v[4], output_tokens=v[5],
        reasoning_tokens=v[6], cost=v[7], revenue=v[8], latency_ms_sum=v[9] / 1000,
        upstream_ms_sum=v[10] / 1000, latency_buckets=tuple(v[lat : lat + len(LATENCY_COLS)]),
        saved=v[_SAVED_AT], cache_misses=v[_SAVED_AT + 1],
    )  # fmt: skip


def entry_rows(query: SeriesQuery, entries: Iterable[LedgerEntry]) -> list[list[Any]]:
    """What ``series_statement`` answers, computed from entries (the memory store's way)."""
    group_attr = {"tenant": "tenant_id", "key": "key_id", "model": "model_served",
                  "feature": "feature", "status": "status"}  # fmt: skip
    wanted = [(attr, getattr(query, attr)) for attr, _ in FILTERS]
    out = []
    for e in entries:
        if not query.start <= e.started_at < query.end:
            continue
        if any(v is not None and _field(e, a) != v for a, v in wanted):
            continue
        hour = None if query.bucket == "all" else hour_of(e.started_at)
        group = getattr(e, group_attr[query.group_by]) if query.group_by else None
        if query.group_by == "feature":
            group = group or ""
        out.append([hour, group, *entry_values(e)])
    return out


def _field(e: LedgerEntry, attr: str) -> Any:
    if attr == "model":
        return e.model_served
    if attr == "feature":
        return e.feature or ""
    return getattr(e, attr)


# --- the usage report (``UsageStore.usage``) from the rollups --------------------------------

# the usage groups the rollups answer (the others, ``user``, ``provider`` and ``workspace``,
# read entries)
USAGE_FROM_ROLLUPS: dict[str | None, tuple[str | None, Bucket]] = {
    None: (None, "all"), "tenant": ("tenant", "all"), "model": ("model", "all"),
    "feature": ("feature", "all"), "key": ("key", "all"), "status": ("status", "all"),
    "day": (None, "day"), "hour": (None, "hour"),
}  # fmt: skip
# the widest range a usage query without bounds covers (whole hours, so no cut hour is read)
FOREVER = (-(10**7) * HOUR, 10**7 * HOUR)  # about the years 829 to 3110


def usage_series_query(query: UsageQuery) -> SeriesQuery | None:
    """The series that answers ``query``, or None when the rollups cannot (its group)."""
    if query.group_by not in USAGE_FROM_ROLLUPS:
        return None
    group, bucket = USAGE_FROM_ROLLUPS[query.group_by]
    start = FOREVER[0] if query.start is None else query.start
    end = FOREVER[1] if query.end is None else query.end
    return SeriesQuery(start, end, bucket=bucket, group_by=group, tenant_id=query.tenant_id)


def usage_rows_of(query: UsageQuery, series: Sequence[SeriesPoint]) -> list[UsageRow]:
    """The series' points as usage rows (days and hours as UTC text, like the entries' SQL)."""
    fmt = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00:00Z"}.get(query.group_by or "")
    return [
        UsageRow(
            datetime.fromtimestamp(p.bucket, UTC).strftime(fmt) if fmt else p.group,
            p.requests,
            p.input_tokens,
            p.output_tokens,
            p.cost,
            p.revenue,
        )  # fmt: skip
        for p in series
    ]


class RollupUsage:
    """``UsageStore.usage`` from the rollups where its group allows (mixed into the SQL
    stores' report mixins, beside their ``series``)."""

    async def series(self, query: SeriesQuery) -> list[SeriesPoint]:
        raise NotImplementedError

    async def usage_from_rollups(self, query: UsageQuery) -> list[UsageRow] | None:
        """The usage rows, or None when the rollups cannot answer (group ``user``, ``provider``
        or an unknown one: the entries' SQL answers, or refuses, it)."""
        asked = usage_series_query(query)
        if asked is None:
            return None
        return usage_rows_of(query, await self.series(asked))
