"""The SQLite store's identity roles (issue 14): the vault's credentials, made on first use
from the store's runners and its auth epoch (``SQLiteStore`` is at its size cap, so they are
composed in from here)."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import Any

from farebox.stores.sqlite.credentials import SQLiteCredentials
from farebox.stores.sqlite.epoch_file import EpochFile


def bump_epoch(db: sqlite3.Connection) -> int:
    """Raise the auth epoch in ``db``'s transaction; the new value."""
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'auth_epoch'")
    row = db.execute("SELECT value FROM meta WHERE name = 'auth_epoch'").fetchone()
    return int(row[0])


class IdentityRoles:
    _epoch: EpochFile
    _runners: Callable[[], tuple[Any, Any]]

    @functools.cached_property
    def credentials(self) -> SQLiteCredentials:
        write, read = self._runners()
        return SQLiteCredentials(write, read, bump_epoch, lambda e: self._epoch.publish(e))
