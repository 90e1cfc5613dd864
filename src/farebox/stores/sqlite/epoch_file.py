"""Shared-memory words that every process on the host maps (``SharedWord``), and the auth
epoch counter built on one (``EpochFile``).

The SQLite store publishes its auth epoch here after each tenant or key change, so that
checking "did anything change?" on every request costs a memory read, not a query.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

SIZE = 8


class SharedWord:
    """An unsigned 8-byte word in a small file that every process on the host maps: reading
    it is one memory read. Created 0600; the file only ever grows to its 8 bytes, so opening
    it from several processes at once is safe."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1
        self._map: mmap.mmap | None = None

    def open(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < SIZE:
            os.ftruncate(self._fd, SIZE)  # only ever grows to SIZE: safe when racing
        self._map = mmap.mmap(self._fd, SIZE)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def is_open(self) -> bool:
        return self._map is not None

    def read(self) -> int:
        if self._map is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        return int.from_bytes(self._map[:SIZE], "little")

    def write(self, value: int) -> None:
        if self._map is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        self._map[:SIZE] = value.to_bytes(SIZE, "little")


class EpochFile(SharedWord):
    def publish(self, value: int) -> None:
        """Raise the counter to ``value`` (never lower it), under an exclusive lock."""
        if self._map is None:
            raise RuntimeError("EpochFile is not open")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if value > self.read():
                self.write(value)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
