"""Conditional pauses (``stores.pausing``) in SQLite: one UPDATE with its condition, and the
auth epoch bumped in the same write transaction when it changed the row."""

from __future__ import annotations

from farebox.stores.pausing import TABLES, What
from farebox.stores.sqlite.epoch_role import EpochRole


class SQLitePauses(EpochRole):
    async def pause_unpaused(self, what: What, ident: str, reason: str) -> bool:
        sql = f"UPDATE {TABLES[what]} SET paused = 1, pause_reason = ? WHERE id = ? AND paused = 0"
        return await self._change_one(sql, (reason, ident))

    async def resume_paused_by(self, what: What, ident: str, mark: str) -> bool:
        sql = (
            f"UPDATE {TABLES[what]} SET paused = 0, pause_reason = NULL "
            "WHERE id = ? AND paused = 1 AND instr(COALESCE(pause_reason, ''), ?) > 0"
        )
        return await self._change_one(sql, (ident, mark))
