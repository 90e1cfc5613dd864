"""Upsell moments and plan changes as rows: the SQL both stores share (``?`` placeholders;
PostgreSQL's are numbered by ``numbered``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from farebox.core.upsell import Moment, PlanChange, TopUp

MOMENT_COLS = ("tenant_id", "kind", "budget", "hour", "plan")
CHANGE_COLS = ("tenant_id", "from_plan", "to_plan", "at")
INSERT_MOMENT = (
    f"INSERT INTO upsell_moments({','.join(MOMENT_COLS)}) VALUES (?,?,?,?,?) "
    "ON CONFLICT (tenant_id, kind, budget, hour) DO NOTHING"
)
MOMENTS = (
    f"SELECT {','.join(MOMENT_COLS)} FROM upsell_moments WHERE hour >= ? AND hour < ? "
    "ORDER BY hour, tenant_id, kind, budget"
)
INSERT_CHANGE = f"INSERT INTO plan_changes({','.join(CHANGE_COLS)}) VALUES (?,?,?,?)"
CHANGES = (
    f"SELECT {','.join(CHANGE_COLS)} FROM plan_changes WHERE at >= ? AND at < ? "
    "ORDER BY at, tenant_id"
)
TOP_UPS = (
    "SELECT tenant_id, amount, created_at FROM credit_grants "
    "WHERE kind = 'top_up' AND created_at >= ? AND created_at < ? ORDER BY created_at, tenant_id"
)


def numbered(sql: str, schema: str) -> str:
    """``sql`` for PostgreSQL: ``$n`` placeholders, its tables in ``schema``."""
    count = iter(range(1, 1000))
    sql = re.sub(r"\?", lambda _: f"${next(count)}", sql)
    return re.sub(r"\b(upsell_moments|plan_changes|credit_grants)\b", schema + r".\1", sql)


def moment_values(moments: Sequence[Moment]) -> list[tuple[Any, ...]]:
    return [(m.tenant_id, m.kind, m.budget, m.hour, m.plan) for m in moments]


def moment_of(row: Sequence[Any]) -> Moment:
    return Moment(row[0], row[1], row[2], int(row[3]), row[4])


def change_values(c: PlanChange) -> tuple[Any, ...]:
    return (c.tenant_id, c.from_plan, c.to_plan, c.at)


def change_of(row: Sequence[Any]) -> PlanChange:
    return PlanChange(row[0], row[1], row[2], float(row[3]))


def top_up_of(row: Sequence[Any]) -> TopUp:
    return TopUp(row[0], int(row[1]), float(row[2]))
