"""The SQL of the rollups (``stores/rollup_rows.py`` says what they hold): how each dialect
projects a ledger row onto a rollup row (the triggers' and backfills' SQL), and the one
statement a series reads (the rollups of the range's whole days and hours, and the entries of
the hours it cuts at either end)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from farebox.core.cache import MISS
from farebox.core.records import LATENCY_BOUNDS_MS, SeriesQuery
from farebox.stores.rollup_rows import (
    DAY,
    DIMENSION_COLUMN,
    FILTERS,
    HOUR,
    LATENCY_COLS,
    MONEY,
    SPLIT,
    SUMS,
    UTC_NAMES,
    Grain,
    bucket_starts,
    key_of,
    table_of,
)

Sums = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RollupSQL:
    """How one dialect spells the projection of a ledger row onto a rollup row."""

    numbered: bool  # $n placeholders (PostgreSQL) rather than ?
    trunc: str  # truncation toward zero to an integer: "{}" is the expression
    flag: str  # a condition as 0 or 1: "{}" is the condition
    shard: str  # the totals' shard of a tenant: "{}" is the tenant id
    clamp: str  # a float kept within +-MAX_MS: "{}" is the value
    integer: str  # a placeholder typed as a 64-bit integer: "{}" is the placeholder
    split_money: bool  # sums of money as two columns (high, low) of SPLIT (SQLite's int64)

    def projection(
        self, row: str = "", sign: str = "", grain: Grain = "hourly", sums: Sums = SUMS
    ) -> list[tuple[str, str]]:
        """(column, expression) pairs of a ledger row (``row``: its prefix, such as ``NEW.``)
        as a row of the ``grain`` rollups, each of ``sums`` multiplied by ``sign``
        (``-1*`` for a removal)."""
        r = row
        hour = self.trunc.format(f"{r}started_at / 3600.0") + f" * {HOUR}"
        if grain == "daily":  # the day of the hour, in integers: an hour is inside its day
            keys = [f"({hour}) / {DAY} * {DAY}", f"{r}tenant_id", f"{r}status"]
        elif grain == "total":
            keys = [hour, f"{r}status", self.shard.format(f"{r}tenant_id")]
        else:
            keys = [hour, f"{r}tenant_id", f"{r}key_id", f"{r}model_served",
                    f"COALESCE({r}feature, '')", f"{r}status"]  # fmt: skip
        exprs = self._sums(r)
        return list(zip(key_of(grain), keys, strict=True)) + [
            (c, f"{sign}({exprs[c]})") for c in sums
        ]

    def _sums(self, r: str) -> dict[str, str]:
        """Each rollup sum's expression over the ledger row of prefix ``r``."""

        def us(col: str) -> str:
            return self.trunc.format(self.clamp.format(f"{r}{col}") + " * 1000 + 0.5")

        lat = f"{r}latency_ms"
        bounds = [None, *LATENCY_BOUNDS_MS]
        buckets = []
        for i in range(len(LATENCY_COLS)):
            lo, hi = bounds[i], (LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else None)
            parts = ([f"{lat} > {lo}"] if lo is not None else []) + (
                [f"{lat} <= {hi}"] if hi is not None else []
            )
            buckets.append(self.flag.format(" AND ".join(parts)))
        sums = [
            "1", self.flag.format(f"{r}http_status >= 400"), f"{r}input_tokens",
            f"{r}cached_input_tokens", f"{r}cache_write_5m_tokens + {r}cache_write_1h_tokens",
            f"{r}output_tokens", f"{r}reasoning_tokens", f"{r}cost", f"{r}revenue",
            us("latency_ms"), us("upstream_ms"), *buckets,
            f"{r}saved", self.flag.format(f"COALESCE({r}cache, '') = '{MISS}'"),
        ]  # fmt: skip
        return dict(zip(SUMS, sums, strict=True))

    def select_projection(
        self, source: str, row: str = "", sign: str = "", grain: Grain = "hourly",
        sums: Sums = SUMS,
    ) -> str:  # fmt: skip
        cols = ", ".join(f"{x} AS {c}" for c, x in self.projection(row, sign, grain, sums))
        return f"SELECT {cols} FROM {source}"

    def aggregated(self, source: str, grain: Grain = "hourly", sums: Sums = SUMS) -> str:
        """The rows of ``source`` (ledger rows), summed per rollup key, in key order."""
        keys = ", ".join(key_of(grain))
        summed = ", ".join(f"SUM({c}) AS {c}" for c in sums)
        inner = self.select_projection(source, grain=grain, sums=sums)
        return f"SELECT {keys}, {summed} FROM ({inner}) AS p GROUP BY {keys} ORDER BY {keys}"

    def upsert_tail(self, table: str, grain: Grain = "hourly", sums: Sums = SUMS) -> str:
        adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
        return f"ON CONFLICT ({', '.join(key_of(grain))}) DO UPDATE SET {adds}"


# SQLite has one writer at a time: one shard; PostgreSQL spreads a busy hour over eight rows
SQLITE_ROLLUP = RollupSQL(
    numbered=False, trunc="CAST({} AS INTEGER)", flag="({})", shard="0",
    clamp="MIN(MAX({}, -1e12), 1e12)", integer="CAST({} AS INTEGER)", split_money=True,
)  # fmt: skip
POSTGRES_ROLLUP = RollupSQL(
    numbered=True, trunc="trunc({})::bigint", flag="({})::int", shard="(hashtext({}) & 7)",
    clamp="LEAST(GREATEST({}, -1e12::float8), 1e12::float8)", integer="{}::bigint",
    split_money=False,
)  # fmt: skip


@dataclass(slots=True)
class Params:
    numbered: bool
    values: list[Any] = field(default_factory=list)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}" if self.numbered else "?"


def series_statement(dialect: RollupSQL, schema: str, query: SeriesQuery) -> tuple[str, list[Any]]:
    """One statement summing, per hour (None for ``all``) and group: the daily rollups of the
    whole UTC days in the range (when the query's buckets, group and filters allow), the
    hourly rollups of the other whole hours, and the entries of the hours the range cuts at
    its ends. ``schema``: the tables' prefix (``""`` or ``"name".``)."""
    p = Params(dialect.numbered)
    when = bucket_sql(dialect, p, query)  # first: its placeholders come first in the text
    h0 = math.ceil(query.start / HOUR) * HOUR
    h1 = max(math.floor(query.end / HOUR) * HOUR, h0)
    filters = [(col, getattr(query, attr)) for attr, col in FILTERS]
    group = DIMENSION_COLUMN[query.group_by] if query.group_by else "NULL"
    parts = []
    d0, d1 = math.ceil(h0 / DAY) * DAY, math.floor(h1 / DAY) * DAY
    hourly: Grain = "total" if total_allowed(query) else "hourly"
    if hourly == "hourly" and daily_allowed(query) and d0 < d1:
        parts.append(_rollup_part(p, schema, group, (d0, d1), filters, "daily"))
        hours = [(h0, d0), (d1, h1)]
    else:
        hours = [(h0, h1)]
    parts += [
        _rollup_part(p, schema, group, span, filters, hourly) for span in hours if span[0] < span[1]
    ]
    ledger = f"{schema}ledger"
    if query.start < h0:
        parts.append(_ledger_part(dialect, p, ledger, query, group, ("<", h0), filters))
    if h1 < query.end:
        parts.append(_ledger_part(dialect, p, ledger, query, group, (">=", h1), filters))
    if not parts:  # an empty range inside one whole hour
        parts.append(_rollup_part(p, schema, group, (h0, h0), filters))
    sums = ", ".join(_sum(dialect, c) for c in SUMS)
    union = " UNION ALL ".join(parts)
    sql = (f"SELECT {when} AS h, g, {sums} FROM ({union}) AS u "
           "GROUP BY h, g")  # fmt: skip
    return sql, p.values


def _sum(dialect: RollupSQL, col: str) -> str:
    """A column's sum (two, high and low halves, for money on SQLite: its SUM is int64)."""
    if dialect.split_money and col in MONEY:
        return f"SUM({col} >> 32), SUM({col} & {SPLIT - 1})"
    return f"SUM({col})"


def bucket_sql(dialect: RollupSQL, p: Params, query: SeriesQuery) -> str:
    """The expression of the start of a rollup row's bucket (of its column ``hour``): NULL for
    ``all``; UTC days by arithmetic; other days and months by a binary CASE over the bucket
    starts computed here, when every start is a whole UTC hour and they are few enough;
    else the hour itself (``points`` folds the hours, reading each)."""
    if query.bucket == "all":
        return "NULL"
    if query.bucket == "hour":
        return "hour"
    lo = math.floor(query.start / HOUR) * HOUR
    if query.bucket == "day" and query.tz in UTC_NAMES:
        base = math.floor(lo / DAY) * DAY  # hour >= lo >= base: the division floors
        return f"(hour - {p.add(base)}) / {DAY} * {DAY} + {p.add(base)}"
    try:
        starts = bucket_starts(query, lo, math.ceil(query.end / HOUR) * HOUR + HOUR)
    except (ValueError, OverflowError, OSError):  # a time before the year 1 or after 9999
        starts = None  # (the hours read, if any, are within the calendar)
    if starts is None:
        return "hour"
    return _case(dialect, p, starts)


def _case(dialect: RollupSQL, p: Params, starts: list[int]) -> str:
    """``starts[i]`` for an hour in ``[starts[i], starts[i + 1])`` (the first for any before,
    the last for any after), as a CASE nested by halves: log2(len) comparisons a row."""
    if len(starts) == 1:
        return dialect.integer.format(p.add(starts[0]))
    mid = len(starts) // 2
    at = p.add(starts[mid])
    below = _case(dialect, p, starts[:mid])
    return f"CASE WHEN hour < {at} THEN {below} ELSE {_case(dialect, p, starts[mid:])} END"


def total_allowed(query: SeriesQuery) -> bool:
    """Whether the totals answer the query's whole hours: it groups and filters by status at
    most."""
    coarse = all(v is None for v in (query.tenant_id, query.key_id, query.model, query.feature))
    return coarse and query.group_by in (None, "status")


def daily_allowed(query: SeriesQuery) -> bool:
    """Whether the daily rollups can answer the query's whole UTC days: its buckets hold
    whole UTC days, and it groups and filters by tenant and status at most."""
    utc_buckets = query.bucket == "all" or (query.bucket != "hour" and query.tz in UTC_NAMES)
    coarse = query.key_id is None and query.model is None and query.feature is None
    return utc_buckets and coarse and query.group_by in (None, "tenant", "status")


def _rollup_part(
    p: Params, schema: str, group: str, span: tuple[int, int], filters: list[tuple[str, Any]],
    grain: Grain = "hourly",
) -> str:  # fmt: skip
    where = [f"hour >= {p.add(span[0])}", f"hour < {p.add(span[1])}"]
    where += [f"{col} = {p.add(v)}" for col, v in filters if v is not None]
    cols = ", ".join(("hour", f"{group} AS g", *SUMS))
    return f"SELECT {cols} FROM {schema}{table_of(grain)} WHERE {' AND '.join(where)}"


def _ledger_part(
    dialect: RollupSQL, p: Params, ledger: str, query: SeriesQuery, group: str,
    cut: tuple[str, int], filters: list[tuple[str, Any]],
) -> str:  # fmt: skip
    """The entries of ``[start, end)`` whose hour is before ``h0`` or from ``h1`` on (``cut``),
    projected as rollup rows: the hours the range cuts. Placeholders in the text's order."""
    hour = dialect.projection()[0][1]
    where = [
        f"started_at >= {p.add(float(query.start))}",
        f"started_at < {p.add(float(query.end))}",
        f"{hour} {cut[0]} {p.add(cut[1])}",
    ]
    ledger_col = {"model": "model_served", "feature": "COALESCE(feature, '')"}
    where += [f"{ledger_col.get(c, c)} = {p.add(v)}" for c, v in filters if v is not None]
    rows = dialect.select_projection(f"{ledger} WHERE {' AND '.join(where)}")
    return f"SELECT {', '.join(('hour', f'{group} AS g', *SUMS))} FROM ({rows}) AS c"
