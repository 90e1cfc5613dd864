"""CLI commands on the local database (no ``--url``): with the configuration the database
is served with (see ``cli.config_source``), in this process, through the admin API's own code."""

from __future__ import annotations

import asyncio
import getpass
import json
import secrets
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from farebox.cli.output import error_line, farebox_error_line
from farebox.config.settings import Settings, load_settings
from farebox.core.keys import hash_key
from farebox.errors import ConfigError, FareboxError

T = TypeVar("T")


def local_settings(config: str | None) -> Settings:
    """The settings a command on the local database uses: the configuration the database
    is served with (see cli.config_source), never a guess."""
    from farebox.cli.config_source import local_settings as served_settings

    try:
        return served_settings(
            config,
            lambda path, overrides: load_settings(path, overrides=overrides),
            warn=lambda line: click.echo(line, err=True),
        )
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


def record_served(
    settings: Settings, config: str | None, overrides: dict[str, Any] | None = None
) -> None:
    from farebox.cli.config_source import record

    try:
        record(settings, config, overrides)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


def _quiet(settings: Settings) -> Settings:
    """The settings for a one-off CLI command: no billing export in the background."""
    billing = settings.file.billing.model_copy(update={"in_serve": False})
    return settings.model_copy(
        update={"file": settings.file.model_copy(update={"billing": billing})}
    )


def run_local(
    settings: Settings,
    work: Callable[[Any], Awaitable[T]],
    audit: Callable[[T | None], Note] | None = None,
) -> T:
    """Run ``work(tenancy)`` in an in-process app on the local database (``local_settings``).
    ``audit``: the work is a mutation; what its audit record says, given its result (None:
    it failed), recorded with the OS user as the actor (``cli:<user>``) however the work
    ends: an error of the tree with its status, any other (a database or OS error) as 500."""
    from farebox.app import create_app

    app = create_app(_quiet(settings), announce=lambda message: click.echo(message, err=True))

    async def run() -> T:
        async with app.router.lifespan_context(app):
            if audit is None:
                return await work(app.state.tenancy)
            status, result = 500, None  # what the record says unless the work ends otherwise
            try:
                result = await work(app.state.tenancy)
                status = 200
                return result
            except FareboxError as exc:
                status = exc.status
                raise
            finally:  # one record, whatever happened
                await _record(app, audit(result if status < 400 else None), status)

    return _complete(run())


@dataclass(frozen=True)
class Note:
    """A local mutation's audit record: the admin API's action it stands for, its target,
    and the resource after it (masked before it is stored)."""

    action: str
    target: str
    after: Any = None
    status: int = 200  # the status the admin API answers it with


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


async def _record(app: Any, note: Note, status: int) -> None:
    from farebox.core.audit import AuditEntry
    from farebox.gateway.call import new_request_id
    from farebox.identity.audit import AuditLog

    services = app.state.services
    ok = status < 400
    change = {"before": None, "after": note.after if ok else None, "request": None}
    entry = AuditEntry(cli_actor(), "owner", note.action, note.target, change, "local",
                       new_request_id(), "ok" if ok else "failed",
                       note.status if ok else status)  # fmt: skip
    await AuditLog(services.store.audit, services.clock).record(entry)


def in_process(settings: Settings, method: str, path: str, body: Any = None) -> Any:
    """Call the admin API of an in-process app on the local database (no server), with the
    settings ``local_settings`` gave."""
    from farebox.app import create_app

    app = create_app(_quiet(settings), announce=lambda message: click.echo(message, err=True))
    payload = json.dumps(body).encode() if body is not None else b""
    raw_path, _, query = path.partition("?")

    async def run() -> tuple[int, bytes]:
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        token = secrets.token_urlsafe(32)  # local database access is admin access
        scope = {
            "type": "http", "method": method, "path": raw_path, "raw_path": raw_path.encode(),
            "query_string": query.encode(), "root_path": "", "scheme": "http",
            "http_version": "1.1", "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
            "headers": [(b"content-type", b"application/json"),
                        (b"authorization", f"Bearer {token}".encode())],
            "farebox.audit_actor": cli_actor(),  # the audit trail's actor (audit_trail.py)
        }  # fmt: skip
        async with app.router.lifespan_context(app):
            services = app.state.services
            services.admin_key_hash = hash_key(services.secret, token)
            await app(scope, receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, b"".join(
            m.get("body", b"") for m in sent if m["type"] == "http.response.body"
        )

    status, data = _complete(run())
    if status >= 400:
        raise click.ClickException(error_line(status, data))
    return json.loads(data or b"null")


def _complete(work: Coroutine[Any, Any, T]) -> T:
    """Run a local command's work; an error of the tree becomes one line, as the API's do."""
    try:
        return asyncio.run(work)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    except FareboxError as exc:
        raise click.ClickException(farebox_error_line(exc)) from None
