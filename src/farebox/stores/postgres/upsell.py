"""Upsell moments and plan changes in PostgreSQL (the ``UpsellStore`` role); top-ups are read
from the credit grants."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from farebox.core.upsell import Moment, PlanChange, TopUp
from farebox.stores.upsell_rows import (
    CHANGES,
    INSERT_CHANGE,
    INSERT_MOMENT,
    MOMENTS,
    TOP_UPS,
    change_of,
    change_values,
    moment_of,
    moment_values,
    numbered,
    top_up_of,
)

MIGRATION = """
CREATE TABLE {s}.upsell_moments (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    budget TEXT NOT NULL,
    hour BIGINT NOT NULL,
    plan TEXT NOT NULL,
    PRIMARY KEY (tenant_id, kind, budget, hour)
);
CREATE INDEX upsell_moments_hour ON {s}.upsell_moments(hour);
CREATE TABLE {s}.plan_changes (
    tenant_id TEXT NOT NULL,
    from_plan TEXT NOT NULL,
    to_plan TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX plan_changes_at ON {s}.plan_changes(at);
CREATE INDEX credit_grants_created ON {s}.credit_grants(created_at);
"""


class PostgresUpsell:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        self._insert_moment = numbered(INSERT_MOMENT, schema)
        self._moments = numbered(MOMENTS, schema)
        self._insert_change = numbered(INSERT_CHANGE, schema)
        self._changes = numbered(CHANGES, schema)
        self._top_ups = numbered(TOP_UPS, schema)

    async def add_moments(self, moments: Sequence[Moment]) -> None:
        rows = moment_values(moments)
        if rows:
            async with self._pool().acquire() as conn:
                await conn.executemany(self._insert_moment, rows)

    async def moments(self, start: float, end: float) -> list[Moment]:
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(self._moments, _ceil(start), _ceil(end))
        return [moment_of(tuple(r)) for r in rows]

    async def add_plan_change(self, change: PlanChange) -> None:
        async with self._pool().acquire() as conn:
            await conn.execute(self._insert_change, *change_values(change))

    async def plan_changes(self, start: float, end: float) -> list[PlanChange]:
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(self._changes, float(start), float(end))
        return [change_of(tuple(r)) for r in rows]

    async def top_ups(self, start: float, end: float) -> list[TopUp]:
        async with self._pool().acquire() as conn:
            rows = await conn.fetch(self._top_ups, float(start), float(end))
        return [top_up_of(tuple(r)) for r in rows]


def _ceil(value: float) -> int:
    """``hour < end`` for an integer column: the first integer not below ``end``."""
    return -int(-value // 1)
