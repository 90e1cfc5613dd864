"""``farebox serve``: run the gateway under uvicorn, one process or several workers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from farebox.cli.local import record_served
from farebox.cli.target import settings_or_exit
from farebox.config.settings import Settings, export_for_workers

if TYPE_CHECKING:
    import uvicorn


def uvicorn_options() -> dict[str, Any]:
    # client IPs come from the socket; trusted proxies are the gateway's own decision
    return {
        "loop": "uvloop",
        "http": "farebox.api.http_protocol:BoundedHttpToolsProtocol",  # headers bounded
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }


def listen_error(host: str, port: int, exc: OSError) -> str:
    """One line that says why ``host:port`` cannot be listened on and what to do instead."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        free = next((p for p in range(port + 1, min(port + 20, 65535)) if _bindable(host, p)), 0)
        instead = f", for example --port {free}" if free else ""
        return f"{where} is already in use: pick another port with --port{instead}"
    reason = exc.strerror or str(exc)
    return f"cannot listen on {where}: {reason}; choose another address with --host or --port"


def check_port(host: str, port: int) -> None:
    """Fail with one line if uvicorn could not listen on ``host:port`` now. The socket is
    closed again before uvicorn starts, so another process may still take the port in
    between: ``run_uvicorn`` reports that case with the same line."""
    try:
        _try_bind(host, port)
    except OSError as exc:
        raise click.ClickException(listen_error(host, port, exc)) from None


def _bindable(host: str, port: int) -> bool:
    try:
        _try_bind(host, port)
    except OSError:
        return False
    return True


def _try_bind(host: str, port: int) -> None:
    """Bind every address of ``host`` the way uvicorn (asyncio's ``create_server``) does:
    SO_REUSEADDR, IPv6 sockets v6-only; raise the first OSError."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in dict.fromkeys(found):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)


class _ListenErrors(logging.Filter):
    """Holds back uvicorn's log line for a failed bind (it logs the OSError itself) and keeps
    the error, so that the CLI says it once, in its own words."""

    def __init__(self) -> None:
        super().__init__()
        self.error: OSError | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, OSError):
            self.error = record.msg
            return False
        return True


@contextlib.contextmanager
def _one_line_on_bind_failure(host: str, port: int) -> Iterator[None]:
    """uvicorn logs a failed bind and exits 3; turn that into one ``Error:`` line (exit 1)."""
    caught = _ListenErrors()
    logger = logging.getLogger("uvicorn.error")
    logger.addFilter(caught)
    try:
        yield
    except SystemExit:
        if caught.error is None:
            raise
        raise click.ClickException(listen_error(host, port, caught.error)) from None
    finally:
        logger.removeFilter(caught)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_dir(enabled: bool) -> Iterator[str | None]:
    """A fresh directory for prometheus-client's multiprocess mode, named in the environment
    the workers inherit (before they start: the client picks its mode at import), so that
    one scrape of any worker covers them all; removed when the server stops. A directory the
    operator set already is used as it is, and kept."""
    if not enabled or os.environ.get(MULTIPROC_ENV):
        yield os.environ.get(MULTIPROC_ENV) if enabled else None
        return
    path = tempfile.mkdtemp(prefix="farebox-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class ServerHooks:
    """Calls from a one-process server, in its main thread: ``started`` once it listens,
    ``stopping`` when SIGINT or SIGTERM arrives, before the graceful shutdown."""

    started: Callable[[], None] | None = None
    stopping: Callable[[], None] | None = None


def run_uvicorn(
    settings: Settings,
    config: str | None,
    host: str,
    port: int,
    workers: int,
    overrides: dict[str, Any] | None = None,
    hooks: ServerHooks | None = None,
    admin_token: str | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. An address that cannot be bound (say, a port another
    process took since ``check_port``) fails with one line (exit 1), not uvicorn's log line
    and exit 3. ``admin_token`` (one process only): an admin credential for this run (the
    demo's sign-in link), also the token local commands get."""
    import uvicorn

    from farebox.app import create_app, tune_gc

    with _one_line_on_bind_failure(host, port):
        if workers > 1:
            export_for_workers(config, overrides)
            asyncio.run(_prepare(settings))
            with metrics_dir(settings.file.metrics.enabled):
                uvicorn.run(
                    "farebox.app:app_from_env",
                    factory=True,
                    host=host,
                    port=port,
                    workers=workers,
                    **uvicorn_options(),
                )
            return
        app = create_app(settings)
        tune_gc()
        published = None
        if settings.file.server.single_process and settings.database_path is not None:
            from farebox.cli.owner_api import Publication

            # local CLI commands cannot open the database: they get the admin API instead
            published = Publication(app, settings.database_path, host, port, admin_token)
        elif admin_token is not None:
            from farebox.cli.owner_api import grant_at_start

            grant_at_start(app, admin_token)
        try:
            if hooks is None:
                uvicorn.run(app, host=host, port=port, **uvicorn_options())
                return
            _serve_one(uvicorn.Config(app, host=host, port=port, **uvicorn_options()), hooks)
        finally:
            if published is not None:
                published.withdraw()  # also at the lifespan's end: SIGTERM may never get here


def _serve_one(config: uvicorn.Config, hooks: ServerHooks) -> None:
    """What ``uvicorn.run`` does for one process, with the hooks (only the demo has any)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit and hooks.started is not None:
                hooks.started()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if hooks.stopping is not None and not self.should_exit:
                hooks.stopping()
            super().handle_exit(sig, frame)

    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


@dataclass(frozen=True, slots=True)
class Mode:
    """The SQLite mode a gateway runs in, and the line that says which and why ("" when
    there is no choice: PostgreSQL or the in-memory store)."""

    single: bool
    line: str = ""


HINT = "set server.single_process: false to let other processes share it"


def choose_mode(settings: Settings, workers: int) -> Mode:
    """``server.single_process`` when it is set; unset, the single-process mode exactly when
    it is safe: SQLite, one worker, and no other farebox process on the database. Never
    starts beside a single-process gateway (its counters are in its memory, no other process
    could share them): that, and a forced mode that cannot be, end in one error line."""
    from farebox.stores.sqlite.single import owned_exclusively

    wanted, path = settings.file.server.single_process, settings.database_path
    if path is None:
        if wanted:
            raise click.ClickException(
                f"{settings.source}: server.single_process applies to a SQLite database only"
            )
        return Mode(False)
    if wanted:
        _check_forced(settings, path, workers)
        return Mode(True, "single-process mode (server.single_process: true)")
    if owned_exclusively(path):
        raise click.ClickException(_owned_line(path))
    if wanted is False:
        return Mode(False, "shared mode (server.single_process: false)")
    if workers > 1:
        return Mode(False, f"shared mode (SQLite, {workers} workers share the counters)")
    if _in_use(path):
        return Mode(False, "shared mode (SQLite, another farebox process uses the database)")
    return Mode(True, f"single-process mode (SQLite, one worker, database not shared); {HINT}")


def with_mode(settings: Settings, mode: Mode) -> Settings:
    """``settings`` with the mode chosen written in (the app builds its store from it)."""
    server = settings.file.server.model_copy(update={"single_process": mode.single})
    file = settings.file.model_copy(update={"server": server})
    return settings.model_copy(update={"file": file})


def _check_forced(settings: Settings, path: Path, workers: int) -> None:
    """``server.single_process: true`` needs one worker and a database nobody else uses."""
    if workers > 1:
        raise click.ClickException(
            f"{settings.source}: server.single_process cannot run {workers} workers: "
            "their counters would not be shared (turn single_process off to use --workers)"
        )
    if _in_use(path):
        raise click.ClickException(
            f"{path} is in use by another farebox process; server.single_process needs the "
            "database to itself"
        )


def _in_use(path: Path) -> bool:
    from farebox.stores.sqlite.single import owner_busy

    return path.parent.is_dir() and owner_busy(path) is not None


def _owned_line(path: Path) -> str:
    from farebox.cli.owner_api import read

    api = read(path)
    where = f" ({api.url}, pid {api.pid})" if api is not None else ""
    return (
        f"{path} is served by a farebox gateway in single-process mode{where}, whose budget "
        "and rate-limit counters live in its memory: a second gateway could not share them. "
        "Stop it, or serve the database with server.single_process: false in every gateway "
        "on it (or run one gateway with --workers N)"
    )


async def _prepare(settings: Settings) -> None:
    """Open the store once in the parent so migrations and the admin key happen once."""
    from farebox.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass


@click.command()
@click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None, help="farebox.yaml"
)
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8787).")
@click.option("--workers", type=int, default=None, help="Worker processes (default 1).")
def serve(config: str | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Start the gateway."""
    settings = settings_or_exit(config)
    server = settings.file.server
    host, port = host or server.host, port if port is not None else server.port
    workers = workers or server.workers
    mode = choose_mode(settings, workers)
    record_served(settings, config)  # as configured: the CLI loads the same file
    if mode.line:
        click.echo(f"Farebox runs in {mode.line}", err=True)
    click.echo(f"Farebox listening on http://{host}:{port} ({settings.source})", err=True)
    run_uvicorn(with_mode(settings, mode), config, host, port, workers)
