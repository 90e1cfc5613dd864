"""``farebox demo``: the embedded default with sample plans, tenants and keys."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from farebox.cli.local import record_served
from farebox.cli.serve import run_uvicorn
from farebox.cli.target import settings_or_exit


@click.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=8787)
@click.option("--traffic", is_flag=True, help="Also drive simulated traffic from several tenants.")
def demo(host: str, port: int, traffic: bool) -> None:
    """Start the embedded default with sample plans and tenants."""
    from farebox.app import create_app
    from farebox.demo.seed import (
        DEMO_ANOMALY,
        DEMO_MODELS,
        DEMO_PLANS,
        DEMO_PROVIDERS,
        RUNAWAY_AFTER_S,
        seed,
        traffic_profiles,
    )  # fmt: skip

    overrides: dict[str, Any] = {"plans": DEMO_PLANS, "default_plan": "free",
                                 "providers": DEMO_PROVIDERS, "models": DEMO_MODELS,
                                 "anomaly": DEMO_ANOMALY}  # fmt: skip
    settings = settings_or_exit(None, overrides)
    app = create_app(settings)

    async def prepare() -> dict[str, str]:
        async with app.router.lifespan_context(app):
            return await seed(app.state.tenancy, app.state.services.store)

    keys = asyncio.run(prepare())
    record_served(settings, None, overrides)  # so the CLI reads the demo's own plans
    key = keys["acme"]
    base = f"http://{host}:{port}"
    click.echo(f"\nFarebox demo on {base}  (database: {settings.database_path})")
    click.echo(f"Tenant 'acme' (plan pro) key: {key}\n")
    click.echo("Try it:")
    click.echo(
        f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}\'\n'
    )
    click.echo("Usage so far:  farebox usage --group-by tenant", err=True)
    click.echo(f"Margins this month:  farebox margins --month {_this_month()}", err=True)
    click.echo("Anomalies paused so far:  farebox anomalies list", err=True)
    click.echo(
        "(from this directory; elsewhere add --url " + base + " with FAREBOX_ADMIN_KEY set)",
        err=True,
    )
    if traffic:
        click.echo(
            f"Tenant 'umbrella' runs a CI job whose retry loop runs away after "
            f"{RUNAWAY_AFTER_S:.0f} s: watch anomaly detection pause it and page.",
            err=True,
        )
        _start_traffic(base, traffic_profiles(keys))
    run_uvicorn(settings, None, host, port, 1, overrides)


def _this_month() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m")


def _start_traffic(base: str, profiles: list[Any]) -> None:
    """Drive simulated traffic from a daemon thread while the server runs."""
    import threading

    from farebox.demo.drive import drive

    async def run() -> None:
        await drive(base, profiles, asyncio.Event(), lambda line: click.echo(line, err=True))

    threading.Thread(target=lambda: asyncio.run(run()), name="demo-traffic", daemon=True).start()
    click.echo(f"Driving simulated traffic from {len(profiles)} tenants.", err=True)
