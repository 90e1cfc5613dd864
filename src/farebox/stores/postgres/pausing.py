"""Conditional pauses (``stores.pausing``) in PostgreSQL: one UPDATE with its condition (the
row lock makes a concurrent operator's pause either land first, and win, or wait and then
overwrite, as an operator's pause always does). The scaled store bumps its auth epoch after
a change (``PausesThatBump``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farebox.stores.pausing import TABLES, What


class PostgresPauses:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        self._s = schema

    async def pause_unpaused(self, what: What, ident: str, reason: str) -> bool:
        sql = (
            f"UPDATE {self._s}.{TABLES[what]} SET paused = TRUE, pause_reason = $1 "
            "WHERE id = $2 AND NOT paused RETURNING id"
        )
        return await self._pool().fetchval(sql, reason, ident) is not None

    async def resume_paused_by(self, what: What, ident: str, mark: str) -> bool:
        sql = (
            f"UPDATE {self._s}.{TABLES[what]} SET paused = FALSE, pause_reason = NULL "
            "WHERE id = $1 AND paused AND strpos(COALESCE(pause_reason, ''), $2) > 0 "
            "RETURNING id"
        )
        return await self._pool().fetchval(sql, ident, mark) is not None
