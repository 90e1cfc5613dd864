"""One ``meta`` value of a SQLite database, read or written outside a running store: what
``farebox serve`` and ``farebox demo`` record about the configuration they serve with, and
what the CLI reads back before it opens the database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from farebox.stores.sqlite.conn import connect, lock_owner
from farebox.stores.sqlite.schema import migrate


def read_meta(path: Path, name: str) -> str | None:
    """The value, or None when the database, its meta table or the value does not exist.
    Read-only: never creates the database."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:  # not a farebox database (yet)
        return None
    finally:
        conn.close()
    return None if row is None else str(row[0])


def write_meta(path: Path, name: str, value: str) -> None:
    """Set the value (creating and migrating the database if needed). Refused, like any
    other process, when a single-process gateway owns the database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = lock_owner(path, exclusive=False)
    conn = connect(path)
    try:
        migrate(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO meta(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
        os.close(owner)
