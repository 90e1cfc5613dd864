"""``farebox demo``: the embedded default with sample plans, tenants and keys."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import shutil
import signal
import sys
import sysconfig
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from farebox.cli.local import record_served
from farebox.cli.output import print_table
from farebox.cli.owner_api import loopback_url
from farebox.cli.progress import progress_bar
from farebox.cli.serve import ServerHooks, check_port, choose_mode, run_uvicorn, with_mode
from farebox.cli.tables import column_totals
from farebox.cli.target import settings_or_exit
from farebox.config.settings import Settings
from farebox.core.keys import ADMIN_PREFIX, new_key
from farebox.errors import FareboxError

if TYPE_CHECKING:
    from farebox.demo.drive import Tally

T = TypeVar("T")
DEFAULT_PORT = 8787


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on; pick another one when it is taken.",
)
@click.option(
    "--traffic",
    is_flag=True,
    help="Also drive simulated traffic from the demo tenants; Ctrl-C stops it and prints "
    "a summary per tenant.",
)
def demo(host: str, port: int, traffic: bool) -> None:
    """Start the embedded default with sample plans and tenants, and print a key for each.

    Its data stays in farebox.db in the current directory. It checks its port first: when
    the port is taken it says so, prints no key and exits with status 1.
    """
    from farebox.demo.seed import DEMO_TENANTS

    check_port(host, port)  # before anything is seeded or printed
    configured, overrides = _demo_settings()
    mode = choose_mode(configured, 1)  # single-process when nothing else uses farebox.db
    settings = with_mode(configured, mode)
    with progress_bar("seeding the demo", total=len(DEMO_TENANTS)) as bar:
        keys, since = _in_app(settings, lambda app: _seed(app, bar.advance))
    record_served(configured, None, overrides)  # so the CLI reads the demo's own plans
    if mode.line:
        click.echo(f"Farebox runs in {mode.line}", err=True)
    base = _base_url(host, port)
    token = new_key(ADMIN_PREFIX, secrets.token_urlsafe)  # an admin credential for this run
    _print_welcome(settings, base, keys)
    print_dashboard(settings, loopback_url(host, port), token, keys)
    _print_hints(base)
    if not traffic:
        with _signals_stop_the_server():
            run_uvicorn(settings, None, host, port, 1, overrides, admin_token=token)
        return
    tallies = _serve_with_traffic(settings, overrides, host, port, keys, token)
    _print_summary(settings, tallies, since)


def _demo_settings() -> tuple[Settings, dict[str, Any]]:
    from farebox.demo.seed import DEMO_ANOMALY, DEMO_MODELS, DEMO_PLANS, DEMO_PROVIDERS

    overrides: dict[str, Any] = {"plans": DEMO_PLANS, "default_plan": "free",
                                 "providers": DEMO_PROVIDERS, "models": DEMO_MODELS,
                                 "anomaly": DEMO_ANOMALY}  # fmt: skip
    return settings_or_exit(None, overrides), overrides


def _in_app(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(app)`` while the demo's app is started (store open), outside the server."""
    from farebox.app import create_app

    app = create_app(settings)

    async def run() -> T:
        async with app.router.lifespan_context(app):
            return await work(app)

    try:
        return asyncio.run(run())
    except FareboxError as exc:
        raise click.ClickException(exc.message) from None


async def _seed(app: Any, done: Callable[[], None]) -> tuple[dict[str, str], float]:
    """The demo tenants (once) with a fresh key each, and the time the demo started;
    ``done()`` after each tenant."""
    from farebox.demo.seed import seed

    tenancy = app.state.tenancy
    return await seed(tenancy, app.state.services.store, done), tenancy.now()


def print_dashboard(settings: Settings, base: str, token: str, keys: dict[str, str]) -> None:
    """The dashboard's address and one-click sign-in links, when the dashboard is on: as
    admin (with ``token``, valid while this demo runs) and as one demo tenant. The key is in
    the URL's fragment, which the browser never sends to the server."""
    if not settings.file.dashboard.enabled:
        return
    click.echo(f"Dashboard: {base}/dashboard")
    click.echo(f"Sign in (admin): {signin_url(base, token)}")
    tenant = "acme" if "acme" in keys else next(iter(keys), None)
    if tenant is not None:
        click.echo(f"Sign in (tenant {tenant}): {signin_url(base, keys[tenant])}")
    click.echo("(the admin link works while this demo runs; keys in links are secrets)\n")


def signin_url(base: str, key: str) -> str:
    return f"{base}/dashboard/signin#key={key}"


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _print_welcome(settings: Settings, base: str, keys: dict[str, str]) -> None:
    from farebox.demo.report import KEY_COLUMNS, key_rows

    click.echo(f"\nFarebox demo on {base}  (database: {settings.database_path})\n")
    click.echo("A tenant on each demo plan, with a new key each time the demo starts:")
    print_table(key_rows(keys), KEY_COLUMNS)
    key = keys["acme"]
    click.echo(f"\nTry it as tenant 'acme' (plan pro), key: {key}")
    click.echo(
        f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}\'\n'
    )
    click.echo(
        "With globex's key (plan free) the same request meets the free plan's limits: "
        "the 11th in a minute is refused with a 429.\n"
    )


def _print_hints(base: str) -> None:
    farebox, activate = farebox_command()
    click.echo(f"Usage so far:  {farebox} usage --group-by tenant", err=True)
    click.echo(f"Margins this month:  {farebox} margins --month {_this_month()}", err=True)
    click.echo(f"Anomalies paused so far:  {farebox} anomalies list", err=True)
    click.echo(
        "(from this directory; elsewhere add --url " + base + " with FAREBOX_ADMIN_KEY set)",
        err=True,
    )
    if activate:
        click.echo(
            f"('farebox' is not on your PATH: {activate}, then type just 'farebox')", err=True
        )


def farebox_command() -> tuple[str, str | None]:
    """How to type this very ``farebox`` in a shell: the bare name when PATH finds it, else
    its absolute path, with how to activate the virtual environment it lives in."""
    mine = _running_farebox()
    found = shutil.which("farebox")
    if mine and found and Path(found).resolve() == Path(mine).resolve():
        return "farebox", None
    command = shlex.quote(mine) if mine else f"{shlex.quote(sys.executable)} -m farebox"
    activate = Path(sysconfig.get_path("scripts")) / "activate"
    if sys.prefix == sys.base_prefix or not activate.exists():
        return command, None
    return command, f"activate its venv with 'source {shlex.quote(str(activate))}'"


def _running_farebox() -> str | None:
    """The ``farebox`` script that runs now, or the one beside this Python (``-m farebox``)."""
    script = Path(sys.argv[0])
    if script.name == "farebox" and script.exists():
        return str(script.absolute())
    beside = Path(sysconfig.get_path("scripts")) / "farebox"
    return str(beside) if beside.exists() else None


def _this_month() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m")


@contextlib.contextmanager
def _signals_stop_the_server() -> Iterator[None]:
    """SIGTERM ends the demo as Ctrl-C does. While it serves, uvicorn catches both and shuts
    down gracefully; it raises the signal again afterwards, which then ends ``run_uvicorn``
    quietly (a KeyboardInterrupt it swallows) instead of killing the process."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _serve_with_traffic(
    settings: Settings,
    overrides: dict[str, Any],
    host: str,
    port: int,
    keys: dict[str, str],
    token: str,
) -> dict[str, Tally]:
    """Serve while a thread drives traffic: it starts once the server listens, stops sending
    as soon as the stop signal arrives, and is joined before this returns its counts."""
    from farebox.demo.drive import TrafficThread
    from farebox.demo.seed import RUNAWAY_AFTER_S, traffic_profiles

    profiles = traffic_profiles(keys)
    traffic = TrafficThread(_base_url(host, port), profiles, lambda s: click.echo(s, err=True))
    click.echo(
        f"Driving simulated traffic from {len(profiles)} tenants; Ctrl-C stops it and prints "
        f"a summary. Tenant 'umbrella' runs a CI job whose retry loop runs away after "
        f"{RUNAWAY_AFTER_S:.0f} s: watch anomaly detection pause it and page.",
        err=True,
    )
    hooks = ServerHooks(started=traffic.start, stopping=traffic.request_stop)
    try:
        with _signals_stop_the_server():
            run_uvicorn(settings, None, host, port, 1, overrides, hooks, token)
    finally:
        tallies = traffic.stop()
    return tallies


def _print_summary(settings: Settings, tallies: dict[str, Tally], since: float) -> None:
    """The table per tenant: answers as the simulated clients saw them, money from the
    ledger (everything metered since the demo started, your own requests included)."""
    from farebox.demo.report import SUMMARY_COLUMNS, summary_rows

    async def spend(app: Any) -> dict[str, tuple[int, int]]:
        rows = await app.state.tenancy.usage(None, since, None, "tenant")
        return {str(r.group): (r.cost, r.revenue) for r in rows}

    ledger = _in_app(settings, spend)
    click.echo("\nDemo traffic, per tenant (cost and revenue from the ledger):")
    rows = summary_rows(tallies, ledger)
    total = column_totals(rows, SUMMARY_COLUMNS[2:], ("tenant", "TOTAL"))  # on a terminal
    print_table(rows, SUMMARY_COLUMNS, total=total, numbers={"paused"})
