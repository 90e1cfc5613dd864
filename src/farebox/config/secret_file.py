"""The server secret that keys are hashed under. It never lives in the database."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def secret_path(database_path: Path) -> Path:
    return database_path.with_name(database_path.name + ".secret")


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret file, creating it (mode 0600, exclusively) on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_bytes().strip()
        if len(value) < 32:
            raise ValueError(
                f"{path}: the server secret is too short or still being written"
            ) from None
        return value
    value = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as handle:
        handle.write(value + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return value
