"""Upsell moments and plan changes in SQLite (the ``UpsellStore`` role); top-ups are read from
the credit grants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from farebox.core.upsell import Moment, PlanChange, TopUp
from farebox.stores.sqlite.conn import Runner
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
    top_up_of,
)

MIGRATION = """
CREATE TABLE upsell_moments (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    budget TEXT NOT NULL,
    hour INTEGER NOT NULL,
    plan TEXT NOT NULL,
    PRIMARY KEY (tenant_id, kind, budget, hour)
) WITHOUT ROWID;
CREATE INDEX upsell_moments_hour ON upsell_moments(hour);
CREATE TABLE plan_changes (
    tenant_id TEXT NOT NULL,
    from_plan TEXT NOT NULL,
    to_plan TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX plan_changes_at ON plan_changes(at);
CREATE INDEX credit_grants_created ON credit_grants(created_at);
"""


class SQLiteUpsell:
    def __init__(self, write: Runner[Any], read: Runner[Any]) -> None:
        self._write = write  # runs a function in a write transaction
        self._read = read

    async def add_moments(self, moments: Sequence[Moment]) -> None:
        rows = moment_values(moments)
        if rows:
            await self._write(lambda db: db.executemany(INSERT_MOMENT, rows))

    async def moments(self, start: float, end: float) -> list[Moment]:
        rows = await self._read(lambda db: db.execute(MOMENTS, (start, end)).fetchall())
        return [moment_of(r) for r in rows]

    async def add_plan_change(self, change: PlanChange) -> None:
        row = change_values(change)
        await self._write(lambda db: db.execute(INSERT_CHANGE, row))

    async def plan_changes(self, start: float, end: float) -> list[PlanChange]:
        rows = await self._read(lambda db: db.execute(CHANGES, (start, end)).fetchall())
        return [change_of(r) for r in rows]

    async def top_ups(self, start: float, end: float) -> list[TopUp]:
        rows = await self._read(lambda db: db.execute(TOP_UPS, (start, end)).fetchall())
        return [top_up_of(r) for r in rows]
