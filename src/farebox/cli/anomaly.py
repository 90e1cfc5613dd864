"""CLI commands of anomaly detection: pause and resume, incidents, and ``farebox simulate``.

``register`` adds them: pause and resume to the ``tenants`` and ``keys`` groups, the
``anomalies`` group and ``simulate`` to the root group (``farebox.cli.root`` calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from urllib.parse import urlencode

import click

from farebox.cli.output import json_option, print_listing
from farebox.cli.progress import Bar, progress_bar
from farebox.cli.target import call_admin, settings_or_exit, target

INCIDENT_COLUMNS = ("id", "status", "tenant", "key", "metric", "observed_per_hour",
                    "baseline_per_hour", "action")  # fmt: skip


def register(main: click.Group, tenants: click.Group, keys: click.Group) -> None:
    """Add this module's commands to the root group and the tenant and key groups."""
    pause_commands(tenants, "tenant", "/admin/v1/tenants")
    pause_commands(keys, "key", "/admin/v1/keys")
    main.add_command(anomalies)
    main.add_command(simulate)


def pause_commands(group: click.Group, kind: str, path: str) -> None:
    """``pause`` and ``resume`` on ``group``, for a tenant or a key."""

    @group.command("pause")
    @click.argument("ident")
    @click.option("--reason", default=None, help="Shown to the tenant in the 403.")
    @target
    def pause(ident: str, reason: str | None, config: str | None, url: str | None) -> None:
        """Pause it: its requests get 403 until it is resumed."""
        call_admin(config, url, "POST", f"{path}/{ident}/pause", {"reason": reason})
        click.echo(f"paused {kind} {ident}")

    @group.command("resume")
    @click.argument("ident")
    @target
    def resume(ident: str, config: str | None, url: str | None) -> None:
        """Resume it, resolving the anomaly incidents that paused it (and their pages)."""
        result = call_admin(config, url, "POST", f"{path}/{ident}/resume", None)
        resolved = result.get("resolved_incidents") or []
        suffix = f"; resolved {', '.join(resolved)}" if resolved else ""
        click.echo(f"resumed {kind} {ident}{suffix}")


@click.group()
def anomalies() -> None:
    """Anomaly incidents: what was paused, why, and resolving them."""


@anomalies.command("list")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant's incidents.")
@click.option("--status", type=click.Choice(["open", "resolved"]), default=None,
              help="Only open or only resolved incidents (default: both).")  # fmt: skip
@json_option
@target
def anomalies_list(
    tenant_id: str | None, status: str | None, as_json: bool, config: str | None, url: str | None
) -> None:
    """List anomaly incidents: what was observed against its baseline, and what was done."""
    query = urlencode({k: v for k, v in {"tenant": tenant_id, "status": status}.items() if v})
    result = call_admin(config, url, "GET", "/admin/v1/anomalies?" + query, None)
    print_listing(result, INCIDENT_COLUMNS, as_json, title="Anomaly incidents")


@anomalies.command("resolve")
@click.argument("incident_id")
@target
def anomalies_resolve(incident_id: str, config: str | None, url: str | None) -> None:
    """Resolve an incident and resume what it paused."""
    result = call_admin(config, url, "POST", f"/admin/v1/anomalies/{incident_id}/resolve", None)
    click.echo(f"{result['id']}: {result['status']}")


@click.command()
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="Use this config's anomaly settings (default: built-in).")  # fmt: skip
@click.option("--tenants", "count", type=click.IntRange(1, 5000), default=50,
              help="How many tenants to simulate.")  # fmt: skip
@click.option("--onboarding", "ramps", type=click.IntRange(0, 1000), default=5,
              help="New tenants ramping up from a trickle during the run.")  # fmt: skip
@click.option("--days", type=click.IntRange(1, 90), default=7, help="Live days.")
@click.option("--history-days", type=click.IntRange(0, 90), default=30,
              help="Days of history before the live days, for the baselines.")  # fmt: skip
@click.option("--anomalies", "kinds", default="runaway,power_user,stuffing",
              help="Comma-separated kinds to inject, or 'none'.")  # fmt: skip
@click.option("--seed", type=int, default=1, help="Random seed: the same seed, the same run.")
@click.option("--page", is_flag=True,
              help="Really send the configured PagerDuty/Slack/webhook alerts.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def simulate(
    config: str | None, count: int, ramps: int, days: int, history_days: int, kinds: str,
    seed: int, page: bool, as_json: bool,
) -> None:  # fmt: skip
    """Simulate weeks of multi-tenant traffic through the anomaly detector and score it:
    precision, recall and time to pause."""
    from farebox.demo.simulate import report as render
    from farebox.demo.simulate import result_json
    from farebox.demo.simulate import simulate as run_simulation
    from farebox.demo.synthetic import KINDS

    chosen = [] if kinds.strip() == "none" else [k.strip() for k in kinds.split(",")]
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise click.BadParameter(
            f"unknown kind(s) {unknown}; choose from {', '.join(KINDS)} or 'none'",
            param_hint="--anomalies",
        )
    loaded = settings_or_exit(config)
    logging.getLogger("farebox.anomaly").setLevel(logging.ERROR)  # the report has them
    shown = (
        contextlib.nullcontext(Bar())
        if as_json
        else progress_bar(f"simulating {days} days", days * 24)
    )
    with shown as bar:
        progress = None if as_json else _simulate_progress(bar)
        result = asyncio.run(
            run_simulation(loaded, tenants=count, ramps=ramps, days=days,
                           history_days=history_days, kinds=chosen, seed=seed, page=page,
                           progress=progress)
        )  # fmt: skip
    click.echo(json.dumps(result_json(result), indent=2) if as_json else render(result))


def _simulate_progress(bar: Bar) -> Callable[[int, int], None]:
    """The bar on a terminal; else a ``day N/DAYS`` line on stderr as each day starts."""

    def show(hours: int, of: int) -> None:
        if bar.shown:
            bar.update(completed=hours)
        elif hours % 24 == 0 and hours < of:
            click.echo(f"day {hours // 24 + 1}/{of // 24}", err=True)

    return show
