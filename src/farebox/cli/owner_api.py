"""How a local CLI command reaches a single-process gateway that owns its SQLite database.

A single-process gateway keeps budget and rate-limit counters in its memory and holds the
database's owner lock exclusively, so no other process may open the database (it could not
see those counters). A CLI command on that database (``farebox keys create``, ``farebox
usage``, ...) therefore goes through the gateway's admin API instead, as with ``--url``:

- once it listens, the gateway writes ``<db>-admin`` (mode 0600, beside the database): its
  loopback URL, a token made for this run, and its pid; the token is accepted by its admin
  API as the admin key (``Services.local_admin_hash``), and the file is removed at shutdown
  (``Publication``, around the app's lifespan);
- a local command that finds the owner lock held exclusively reads that file and calls the
  URL with the token. Whoever can read the file can read the database and its ``.secret``
  anyway: local database access is admin access, as it is in the shared mode.

The answers are the gateway's own, so they are the same as through ``--url`` (budgets
included: the reserved amounts live in the gateway's memory).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson
from fastapi import FastAPI

from farebox.core.keys import hash_key
from farebox.errors import ConfigError
from farebox.stores.sqlite.single import owned_exclusively

WAIT_S = 15.0  # for a gateway that owns the database but does not listen yet
POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class OwnerApi:
    """The admin API of the gateway that owns a database: where, and the token to present."""

    url: str
    token: str
    pid: int


def admin_file(database: Path) -> Path:
    return database.with_name(database.name + "-admin")


def loopback_url(host: str, port: int) -> str:
    """The URL a local client reaches a server bound to ``host`` at: a wildcard address is
    reached on the loopback interface of its family."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - read, not bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def publish(database: Path, api: OwnerApi) -> None:
    """Write ``<db>-admin`` whole (a new file renamed over any old one), readable by its
    owner only."""
    target = admin_file(database)
    fresh = target.with_name(target.name + ".new")
    data = orjson.dumps({"url": api.url, "token": api.token, "pid": api.pid})
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(fresh, target)


def withdraw(database: Path, api: OwnerApi) -> None:
    """Remove ``<db>-admin`` if it is still this gateway's."""
    if read(database) == api:
        with contextlib.suppress(FileNotFoundError):
            admin_file(database).unlink()


def read(database: Path) -> OwnerApi | None:
    """The published admin API, or None when there is none (or it is cut short)."""
    try:
        data = orjson.loads(admin_file(database).read_bytes())
        return OwnerApi(str(data["url"]), str(data["token"]), int(data["pid"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _listening(url: str) -> bool:
    """Whether something accepts connections at ``url`` (the gateway publishes its API as
    its app starts, a moment before uvicorn listens)."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 1.0):
            return True
    except OSError:
        return False


def owning_gateway(database: Path, wait_s: float = WAIT_S) -> OwnerApi | None:
    """The admin API of the single-process gateway that owns ``database``; None when no
    gateway owns it exclusively (the command may open the database itself). A gateway that
    owns it but has not published its API yet (it is starting) is waited for up to
    ``wait_s``; ``ConfigError`` after that."""
    deadline = time.monotonic() + wait_s
    while owned_exclusively(database):
        found = read(database)
        if found is not None and _alive(found.pid) and _listening(found.url):
            return found
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"{database} is owned by a farebox gateway in single-process mode that has not "
                f"published its admin API ({admin_file(database).name}) within {wait_s:.0f} s: "
                "retry once it listens, or use --url with FAREBOX_ADMIN_KEY"
            )
        time.sleep(POLL_S)  # polling interval while the owner starts; the deadline bounds it
    return None


class Publication:
    """The gateway's side, around its app's lifespan: once the app has started (uvicorn
    listens right after), the token becomes valid and the file is written; when the app
    stops, before uvicorn raises a SIGTERM again (which ends the process), the file is
    removed. ``withdraw`` may be called again after that."""

    def __init__(
        self, app: FastAPI, database: Path, host: str, port: int, token: str | None = None
    ) -> None:
        self._app = app
        self._database = database
        token = token or secrets.token_urlsafe(32)
        self._api = OwnerApi(loopback_url(host, port), token, os.getpid())
        self._port = port
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(owner: Any) -> AsyncIterator[Any]:
            async with inner(owner) as state:
                try:
                    self._publish()
                    yield state
                finally:
                    self.withdraw()

        app.router.lifespan_context = lifespan

    def _publish(self) -> None:
        grant(self._app, self._api.token)
        if self._port == 0:
            return  # the port the system picks is not known here: local commands need --url
        try:
            publish(self._database, self._api)
        except OSError as exc:  # the gateway serves on; local commands then need --url
            click.echo(f"warning: cannot publish the admin API for local commands: {exc}", err=True)

    def withdraw(self) -> None:
        withdraw(self._database, self._api)


def grant(app: FastAPI, token: str) -> None:
    """Make ``token`` an admin credential of this started app, for this run only (the
    second admin hash, ``Services.local_admin_hash``)."""
    services = app.state.services
    services.local_admin_hash = hash_key(services.secret, token)


def grant_at_start(app: FastAPI, token: str) -> None:
    """``grant`` as the app starts (its lifespan), when no ``Publication`` does: the demo's
    sign-in token in the shared mode."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(owner: Any) -> AsyncIterator[Any]:
        async with inner(owner) as state:
            grant(app, token)
            yield state

    app.router.lifespan_context = lifespan
