"""Opening a SQLite database: its connections (WAL mode, files created 0600) and the owner
lock every process on the database holds."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from farebox.errors import ConfigError

T = TypeVar("T")
# runs a function on a connection (in a write transaction, or on a reader) in the store's thread
Runner = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]


def is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def create_private(path: Path) -> None:
    """Create the database file readable by its owner only (0600), if it does not exist
    yet: SQLite gives its ``-wal`` and ``-shm`` files the database file's mode. Never opens
    (and so never closes) an existing database: closing any descriptor of a file drops
    every POSIX lock this process's SQLite connections hold on it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def connect(
    path: Path, synchronous: str = "NORMAL", busy_timeout_ms: int = 30_000
) -> sqlite3.Connection:
    create_private(path)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def owner_path(path: Path) -> Path:
    return path.with_name(path.name + "-owner")


def lock_owner(path: Path, exclusive: bool) -> int:
    """Every process on a database holds this lock: shared, or exclusive for a single-process
    gateway. So a single-process gateway and anything else never run on one database."""
    fd = os.open(owner_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        if exclusive:
            raise ConfigError(
                f"{path} is in use by another farebox process: server.single_process needs the "
                "database to itself (stop the other process, or set server.single_process: "
                "false everywhere)"
            ) from None
        raise ConfigError(
            f"{path} is owned by a farebox gateway in single-process mode (server.single_process;"
            " the default for one worker on SQLite), whose budget and rate-limit counters live "
            "in its memory: stop it, or reach it through its admin API (--url); to share the "
            "database, serve it with server.single_process: false"
        ) from None
    return fd
