"""``farebox serve``: run the gateway under uvicorn, one process or several workers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click

from farebox.cli.local import record_served
from farebox.cli.target import settings_or_exit
from farebox.config.settings import Settings, export_for_workers


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


def run_uvicorn(
    settings: Settings,
    config: str | None,
    host: str,
    port: int,
    workers: int,
    overrides: dict[str, Any] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    import uvicorn

    from farebox.app import create_app

    if workers > 1:
        export_for_workers(config, overrides)
        asyncio.run(_prepare(settings))
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
    if on_ready is not None:
        on_ready()
    uvicorn.run(
        app,
        host=host,
        port=port,
        **uvicorn_options(),
    )


def _check_single_process(settings: Settings, workers: int) -> None:
    """``server.single_process`` needs one worker and a database nobody else uses."""
    if not settings.file.server.single_process:
        return
    if settings.database_path is None:
        raise click.ClickException(
            f"{settings.source}: server.single_process applies to a SQLite database only"
        )
    if workers > 1:
        raise click.ClickException(
            f"{settings.source}: server.single_process cannot run {workers} workers: "
            "their counters would not be shared (turn single_process off to use --workers)"
        )
    from farebox.stores.sqlite.single import owner_busy

    busy = owner_busy(settings.database_path)
    if busy:
        raise click.ClickException(f"{busy}; server.single_process needs the database to itself")


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
    _check_single_process(settings, workers or server.workers)
    record_served(settings, config)
    click.echo(f"Farebox listening on http://{host}:{port} ({settings.source})", err=True)
    run_uvicorn(settings, config, host, port, workers or server.workers)
