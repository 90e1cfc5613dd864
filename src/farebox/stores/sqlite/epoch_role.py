"""The base of the SQLite roles whose every change bumps the auth epoch in the change's own
write transaction, then publishes the new epoch to every process (credentials, credit
grants, workspaces)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from farebox.stores.sqlite.conn import Runner


class EpochRole:
    def __init__(
        self, write: Runner[Any], read: Runner[Any], bump: Callable[[sqlite3.Connection], int],
        publish: Callable[[int], None],
    ) -> None:  # fmt: skip
        self._write = write  # runs a function in a write transaction
        self._read = read
        self._bump = bump  # the auth epoch, in the change's own transaction
        self._publish = publish

    def _published(self, epoch: int | None) -> bool:
        """Publish ``epoch`` if the change bumped one; True if it did."""
        if epoch is not None:
            self._publish(epoch)
        return epoch is not None

    async def _change_one(self, sql: str, params: Any) -> bool:
        """Run a statement meant to change exactly one row; bump and publish the epoch (and
        return True) only if it did."""

        def write(db: sqlite3.Connection) -> int | None:
            if db.execute(sql, params).rowcount != 1:
                return None
            return self._bump(db)

        return self._published(await self._write(write))
