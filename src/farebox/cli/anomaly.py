"""CLI commands of anomaly detection: pause and resume, incidents, and ``farebox simulate``.

Registered on the root group by ``farebox.cli.main``, which hands over its helpers (so this
module does not import it back).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import click

Call = Callable[[str | None, str | None, str, str, Any], Any]


def register(
    main: click.Group,
    tenants: click.Group,
    keys: click.Group,
    target: Callable[[Callable[..., Any]], Callable[..., Any]],
    call: Call,
    table: Callable[[list[dict[str, Any]], list[str]], None],
    settings: Callable[[str | None], Any],
) -> None:
    def pause_commands(group: click.Group, kind: str, path: str) -> None:
        @group.command("pause")
        @click.argument("ident")
        @click.option("--reason", default=None, help="Shown to the tenant in the 403.")
        @target
        def pause(ident: str, reason: str | None, config: str | None, url: str | None) -> None:
            """Pause it: its requests get 403 until it is resumed."""
            call(config, url, "POST", f"{path}/{ident}/pause", {"reason": reason})
            click.echo(f"paused {kind} {ident}")

        @group.command("resume")
        @click.argument("ident")
        @target
        def resume(ident: str, config: str | None, url: str | None) -> None:
            """Resume it, resolving the anomaly incidents that paused it (and their pages)."""
            result = call(config, url, "POST", f"{path}/{ident}/resume", None)
            resolved = result.get("resolved_incidents") or []
            suffix = f"; resolved {', '.join(resolved)}" if resolved else ""
            click.echo(f"resumed {kind} {ident}{suffix}")

    pause_commands(tenants, "tenant", "/admin/v1/tenants")
    pause_commands(keys, "key", "/admin/v1/keys")

    @main.group()
    def anomalies() -> None:
        """Anomaly incidents: what was paused, why, and resolving them."""

    @anomalies.command("list")
    @click.option("--tenant", "tenant_id", default=None)
    @click.option("--status", type=click.Choice(["open", "resolved"]), default=None)
    @target
    def anomalies_list(
        tenant_id: str | None, status: str | None, config: str | None, url: str | None
    ) -> None:
        from urllib.parse import urlencode

        query = urlencode({k: v for k, v in {"tenant": tenant_id, "status": status}.items() if v})
        rows = call(config, url, "GET", "/admin/v1/anomalies?" + query, None)["data"]
        table(rows, ["id", "status", "tenant", "key", "metric", "observed_per_hour",
                     "baseline_per_hour", "action"])  # fmt: skip

    @anomalies.command("resolve")
    @click.argument("incident_id")
    @target
    def anomalies_resolve(incident_id: str, config: str | None, url: str | None) -> None:
        """Resolve an incident and resume what it paused."""
        result = call(config, url, "POST", f"/admin/v1/anomalies/{incident_id}/resolve", None)
        click.echo(f"{result['id']}: {result['status']}")

    @main.command()
    @click.option("--config", type=click.Path(dir_okay=False), default=None,
                  help="Use this config's anomaly settings (default: built-in).")  # fmt: skip
    @click.option("--tenants", "count", type=click.IntRange(1, 5000), default=50)
    @click.option("--onboarding", "ramps", type=click.IntRange(0, 1000), default=5,
                  help="New tenants ramping up from a trickle during the run.")  # fmt: skip
    @click.option("--days", type=click.IntRange(1, 90), default=7, help="Live days.")
    @click.option("--history-days", type=click.IntRange(0, 90), default=30)
    @click.option("--anomalies", "kinds", default="runaway,power_user,stuffing",
                  help="Comma-separated kinds to inject, or 'none'.")  # fmt: skip
    @click.option("--seed", type=int, default=1)
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
        from farebox.demo.simulate import result_json, simulate
        from farebox.demo.synthetic import KINDS

        chosen = [] if kinds.strip() == "none" else [k.strip() for k in kinds.split(",")]
        unknown = [k for k in chosen if k not in KINDS]
        if unknown:
            raise click.BadParameter(
                f"unknown kind(s) {unknown}; choose from {', '.join(KINDS)} or 'none'",
                param_hint="--anomalies",
            )
        loaded = settings(config)
        logging.getLogger("farebox.anomaly.watch").setLevel(logging.ERROR)  # the report has them
        progress = None if as_json else (lambda line: click.echo(line, err=True))
        result = asyncio.run(
            simulate(loaded, tenants=count, ramps=ramps, days=days, history_days=history_days,
                     kinds=chosen, seed=seed, page=page, progress=progress)
        )  # fmt: skip
        click.echo(json.dumps(result_json(result), indent=2) if as_json else render(result))
