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
from farebox.stores.sqlite.findings import SQLiteFindings
from farebox.stores.sqlite.rollups import ReportReader


def bump_epoch(db: sqlite3.Connection) -> int:
    """Raise the auth epoch in ``db``'s transaction; the new value."""
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'auth_epoch'")
    row = db.execute("SELECT value FROM meta WHERE name = 'auth_epoch'").fetchone()
    return int(row[0])


class IdentityRoles:
    _epoch: EpochFile
    _runners: Callable[[], tuple[Any, Any]]

    @property
    def report_reader(self) -> ReportReader:  # ``SQLiteReports``'s, first in the store's bases
        raise NotImplementedError

    @functools.cached_property
    def credentials(self) -> SQLiteCredentials:
        write, read = self._runners()
        return SQLiteCredentials(write, read, bump_epoch, lambda e: self._epoch.publish(e))

    @functools.cached_property
    def findings(self) -> SQLiteFindings:
        """Issue 15: guardrail findings (read by the reports' reader) and their tallies."""
        write, _ = self._runners()
        return SQLiteFindings(write, lambda: self.report_reader)
