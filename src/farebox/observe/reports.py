"""Reports over the ledger's hourly rollups: time series and top spenders, for the admin API,
GraphQL and the dashboard alike (``Reports``). Every figure comes from
``ReportStore.series``, so no report reads a month of raw entries; money stays exact
(pico-USD integers; shares are exact percentages, rounded half-even to two decimals)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol

from farebox.core.records import SeriesPoint, SeriesQuery
from farebox.errors import InvalidRequest

SpendBy = Literal["cost", "revenue"]
SPEND_BY: tuple[SpendBy, ...] = ("cost", "revenue")


class SeriesSource(Protocol):
    """What reports read (``ReportStore``'s ``series``)."""

    async def series(self, query: SeriesQuery) -> list[SeriesPoint]: ...


@dataclass(frozen=True, slots=True)
class Spender:
    tenant: str
    amount: int  # pico-USD
    share_percent: str | None  # of the period's total; None when the total is 0
    requests: int
    cost: int
    revenue: int


@dataclass(frozen=True, slots=True)
class TopSpenders:
    by: SpendBy
    start: float
    end: float
    total: int  # every tenant's, not only the top's
    tenants: int  # tenants with traffic in the period
    data: list[Spender]


def share(part: int, total: int) -> str | None:
    """``part`` as a percentage of ``total``, exactly, rounded half-even to two decimals."""
    if total == 0:
        return None
    cents = round(Fraction(part * 100 * 100, total))  # Fraction rounds half to even
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def how_many(count: int, n: int | None, top_percent: float | None) -> int:
    """How many tenants the top holds: ``n``, or ``top_percent`` of ``count`` rounded up
    (so the top 10% of 5 tenants is 1 tenant). Exactly one of the two is given."""
    if (n is None) == (top_percent is None):
        raise InvalidRequest("Give exactly one of 'n' and 'top_percent'.", param="n")
    if n is not None:
        if n < 1:
            raise InvalidRequest("'n' must be at least 1.", param="n")
        return min(n, count)
    assert top_percent is not None
    if not (math.isfinite(top_percent) and 0 < top_percent <= 100):
        raise InvalidRequest("'top_percent' must be above 0 and at most 100.", param="top_percent")
    return min(count, math.ceil(Fraction(top_percent) * count / 100))


def top_spenders(
    points: list[SeriesPoint], by: SpendBy, n: int | None = None, top_percent: float | None = None,
    start: float = 0.0, end: float = 0.0,
) -> TopSpenders:  # fmt: skip
    """The top tenants by ``by`` among ``points`` (a series grouped by tenant; several points
    of one tenant are added up), largest first, ties by tenant id."""
    if by not in SPEND_BY:
        raise InvalidRequest("'by' must be cost or revenue.", param="by")
    sums: dict[str, list[int]] = {}
    for p in points:
        if p.group is None:
            continue
        slot = sums.setdefault(p.group, [0, 0, 0])
        slot[0] += p.requests
        slot[1] += p.cost
        slot[2] += p.revenue
    index = 1 if by == "cost" else 2
    total = sum(v[index] for v in sums.values())
    ranked = sorted(sums.items(), key=lambda kv: (-kv[1][index], kv[0]))
    top = ranked[: how_many(len(ranked), n, top_percent)]
    data = [Spender(t, v[index], share(v[index], total), v[0], v[1], v[2]) for t, v in top]
    return TopSpenders(by, start, end, total, len(ranked), data)


class Reports:
    """The report service the admin API, GraphQL and the dashboard call."""

    def __init__(self, store: SeriesSource) -> None:
        self._store = store

    async def series(self, query: SeriesQuery) -> list[SeriesPoint]:
        return await self._store.series(query)

    async def top_spenders(
        self, start: float, end: float, by: SpendBy, n: int | None = None,
        top_percent: float | None = None, tenant_id: str | None = None,
    ) -> TopSpenders:  # fmt: skip
        """The top N (or top X%) tenants by cost or revenue over ``[start, end)``: one
        series over the rollups, one bucket, grouped by tenant."""
        how_many(1, n, top_percent)  # refuse bad input before reading anything
        if by not in SPEND_BY:
            raise InvalidRequest("'by' must be cost or revenue.", param="by")
        query = SeriesQuery(start, end, bucket="all", group_by="tenant", tenant_id=tenant_id)
        return top_spenders(await self.series(query), by, n, top_percent, start, end)
