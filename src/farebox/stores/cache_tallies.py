"""``ReportStore.cache_tallies`` on the SQL stores: per tenant, the response cache's hits
(entries of status ``cache_hit``), misses (``cache`` = ``miss``) and what the hits saved, over
``[start, end)``, from the rollups (``stores/rollup_rows.py``), exactly the ledger's
(``core.cache.tally_entries`` is the reference).

One statement: the daily rollups of the whole UTC days in the range, the hourly rollups of the
other whole hours, and (for a range that is not hour-aligned) the entries of the hours it cuts
at either end, as ``series`` reads them. A tenant's tally reads about a row per status and
day; every tenant's, that times the tenants with traffic. ``saved`` is summed as two halves on
SQLite (``RollupSQL.split_money``), so it is exact beyond 2**63.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from farebox.core.cache import HIT_STATUS, CacheTally
from farebox.stores.rollup_rows import DAY, FOREVER, HOUR, SPLIT, Grain, table_of
from farebox.stores.rollup_sql import POSTGRES_ROLLUP, SQLITE_ROLLUP, Params, RollupSQL

# what each part of the union gives: the tenant, the status, and the three sums read
_COLS = ("tenant_id", "status", "requests", "saved", "cache_misses")


def _spans(h0: int, h1: int) -> list[tuple[Grain, int, int]]:
    """The rollup tables and hour spans covering the whole hours ``[h0, h1)``: the daily rows
    of the whole UTC days inside, the hourly rows of the rest."""
    d0, d1 = math.ceil(h0 / DAY) * DAY, math.floor(h1 / DAY) * DAY
    if d0 >= d1:
        return [("hourly", h0, h1)] if h0 < h1 else []
    spans: list[tuple[Grain, int, int]] = [("daily", d0, d1)]
    spans += [("hourly", lo, hi) for lo, hi in ((h0, d0), (d1, h1)) if lo < hi]
    return spans


def _ledger_part(
    dialect: RollupSQL, p: Params, schema: str, window: tuple[float, float],
    cut: tuple[str, int], tenant_id: str | None,
) -> str:  # fmt: skip
    """The entries of ``window`` in the hours it cuts (``cut``: the hour's comparison and
    bound), projected like rollup rows. Placeholders are added in the text's order (SQLite's
    are positional)."""
    proj = dict(dialect.projection())
    where = [f"started_at >= {p.add(float(window[0]))}", f"started_at < {p.add(float(window[1]))}"]
    where.append(f"{proj['hour']} {cut[0]} {p.add(cut[1])}")
    if tenant_id is not None:
        where.append(f"tenant_id = {p.add(tenant_id)}")
    cols = ", ".join(f"{proj.get(c, c)} AS {c}" for c in _COLS)
    return f"SELECT {cols} FROM {schema}ledger WHERE {' AND '.join(where)}"


def tally_statement(
    dialect: RollupSQL, schema: str, tenant_id: str | None, start: float | None,
    end: float | None,
) -> tuple[str, list[Any]]:  # fmt: skip
    """The statement (and its parameters) of the tallies: one row per tenant with rows in the
    range: the tenant, hits, misses, then saved (as high and low halves on SQLite).
    ``schema``: the tables' prefix (``""`` or ``"name".``)."""
    lo = FOREVER[0] if start is None else start
    hi = FOREVER[1] if end is None else end
    p = Params(dialect.numbered)
    hit = p.add(HIT_STATUS)  # first: the outer SELECT's placeholders come first in the text
    if dialect.split_money:  # every entry's saved: a hit's, and a partial embeddings hit's
        saved_sql = f"SUM(saved >> 32), SUM(saved & {SPLIT - 1})"
    else:
        saved_sql = "SUM(saved)"
    h0 = math.ceil(lo / HOUR) * HOUR
    h1 = max(math.floor(hi / HOUR) * HOUR, h0)
    parts = []
    for grain, a, b in _spans(h0, h1):
        where = [f"hour >= {p.add(a)}", f"hour < {p.add(b)}"]
        if tenant_id is not None:
            where.append(f"tenant_id = {p.add(tenant_id)}")
        cols = ", ".join(_COLS)
        parts.append(f"SELECT {cols} FROM {schema}{table_of(grain)} WHERE {' AND '.join(where)}")
    if lo < h0:
        parts.append(_ledger_part(dialect, p, schema, (lo, hi), ("<", h0), tenant_id))
    if h1 < hi:
        parts.append(_ledger_part(dialect, p, schema, (lo, hi), (">=", h1), tenant_id))
    if not parts:  # an empty range at a whole hour
        parts.append(f"SELECT {', '.join(_COLS)} FROM {schema}rollups WHERE 1 = 0")
    union = " UNION ALL ".join(parts)
    sql = (f"SELECT tenant_id, SUM(CASE WHEN status = {hit} THEN requests ELSE 0 END), "
           f"SUM(cache_misses), {saved_sql} FROM ({union}) AS u GROUP BY tenant_id")  # fmt: skip
    return sql, p.values


def tallies_of(rows: Iterable[Sequence[Any]], split: bool) -> list[CacheTally]:
    """The statement's rows as tallies: tenants with hits or misses, by tenant id."""
    out = []
    for row in rows:
        tenant, hits, misses = row[0], int(row[1] or 0), int(row[2] or 0)
        if split:
            saved = int(row[3] or 0) * SPLIT + int(row[4] or 0)
        else:
            saved = int(row[3] or 0)
        if hits or misses:
            out.append(CacheTally(tenant, hits, misses, saved))
    return sorted(out, key=lambda t: t.tenant_id)


async def sqlite_tallies(
    reader: Any, tenant_id: str | None, start: float | None, end: float | None
) -> list[CacheTally]:
    """The tallies on SQLite, read by the store's reports reader (``ReportReader``)."""
    sql, params = tally_statement(SQLITE_ROLLUP, "", tenant_id, start, end)
    rows = await reader.run(lambda db: db.execute(sql, params).fetchall())
    return tallies_of(rows, split=True)


async def postgres_tallies(
    pool: Any, schema: str, tenant_id: str | None, start: float | None, end: float | None
) -> list[CacheTally]:
    """The tallies on PostgreSQL (``schema``: quoted), one statement on a pooled connection."""
    sql, params = tally_statement(POSTGRES_ROLLUP, f"{schema}.", tenant_id, start, end)
    return tallies_of(await pool.fetch(sql, *params), split=False)
