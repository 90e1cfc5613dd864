"""``farebox export``, ``farebox margins`` and ``farebox reconcile``: the billing side."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import click

from farebox.cli.output import json_option, print_json, print_listing, print_table
from farebox.cli.progress import progress_bar
from farebox.cli.tables import column_totals, show_table
from farebox.cli.target import call_admin, settings_or_exit, target
from farebox.cli.terminal import is_terminal
from farebox.config.settings import Settings
from farebox.errors import FareboxError

if TYPE_CHECKING:
    from farebox.billing.exporter import Exporter, RoundResult, SinkRunner

LAG_CAP = 10_000  # Exporter.lag counts at most this many waiting entries


@click.command("export")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="The config whose database and billing sinks to use.")  # fmt: skip
@click.option("--sink", "sinks", multiple=True, help="Only these billing sinks (default: all).")
@click.option("--follow", is_flag=True, help="Keep exporting new ledger entries.")
@click.option("--from", "start", default=None, help="Replay from (unix seconds or ISO date).")
@click.option("--to", "end", default=None, help="Replay up to (exclusive).")
def export_cmd(
    config: str | None, sinks: tuple[str, ...], follow: bool, start: str | None, end: str | None
) -> None:
    """Export the ledger to the billing sinks (or replay a range of it, idempotently)."""
    from farebox.api.admin.params import parse_time
    from farebox.billing.exporter import build_runners

    settings = settings_or_exit(config)
    runners = [r for r in build_runners(settings) if not sinks or r.name in sinks]
    unknown = set(sinks) - {r.name for r in runners}
    if unknown or not runners:
        raise click.ClickException(
            f"no billing sink named {sorted(unknown)}" if unknown else "no billing sinks configured"
        )
    replay = start is not None or end is not None
    try:
        window = (parse_time(start, "from") or 0.0, parse_time(end, "to") or float("inf"))
    except FareboxError as exc:
        raise click.ClickException(exc.message) from None
    try:
        asyncio.run(_export(settings, runners, window if replay else None, follow))
    except FareboxError as exc:
        raise click.ClickException(exc.message) from None


EXPORT_COLUMNS = ("sink", "entries", "events", "delivered", "dead")


async def _export(
    settings: Settings, runners: list[SinkRunner], window: tuple[float, float] | None, follow: bool
) -> None:
    """Export (or replay ``window`` of) the ledger to ``runners``; then, with ``follow`` (not
    a replay), keep exporting until stopped."""
    from farebox.app import make_store
    from farebox.billing.exporter import Exporter
    from farebox.core.meters import PlanTerms
    from farebox.gateway.routing_table import build_plans
    from farebox.http.client import HttpClient

    plans, default = build_plans(settings), settings.file.default_plan or "default"

    def terms(name: str) -> PlanTerms:  # the plans of this config file (the plan meters)
        return PlanTerms.of(plans.get(name) or plans[default])

    store, http = make_store(settings), HttpClient()
    await store.open()
    exporter = Exporter(store, runners, http, batch=settings.file.billing.batch,
                        hour_grace_s=settings.file.billing.hour_grace_s,
                        plan_terms=terms)  # fmt: skip
    try:
        if window is None and not await store.claim_exporter():
            raise click.ClickException("another process already exports this ledger")
        if window is not None:
            rows = await _replay(exporter, runners, window)
        else:
            rows = await _catch_up(exporter, runners)
        if is_terminal():
            what = "Replayed" if window is not None else "Exported"
            total = column_totals(rows, EXPORT_COLUMNS[1:], ("sink", "TOTAL"))
            show_table(rows, EXPORT_COLUMNS, total=total, title=f"{what} to the billing sinks")
        if follow and window is None:
            await exporter.start(settings.file.billing.interval_s)  # the claim is held
            await asyncio.Event().wait()
    finally:
        await exporter.stop()
        await http.aclose()
        await store.close()


async def _replay(
    exporter: Exporter, runners: list[SinkRunner], window: tuple[float, float]
) -> list[dict[str, Any]]:
    """Each sink's replay of the window; a line per sink off a terminal, a bar on one."""
    rows = []
    with progress_bar("replaying", total=len(runners)) as bar:
        for runner in runners:
            bar.update(description=f"replaying {runner.name}")
            done = await exporter.replay(runner.name, *window)
            rows.append(_row(runner.name, done))
            bar.advance()
            if not bar.shown:
                click.echo(f"{runner.name}: replayed {done.events} events "
                           f"({done.delivered} delivered, {done.dead} dead)")  # fmt: skip
    return rows


async def _catch_up(exporter: Exporter, runners: list[SinkRunner]) -> list[dict[str, Any]]:
    """Export what each sink has not had yet, round by round; a line per round off a
    terminal, a bar per sink (over the entries waiting) on one."""
    rows = []
    for runner in runners:
        row = _row(runner.name, None)
        with progress_bar(f"exporting {runner.name}") as bar:
            if bar.shown:
                waiting = (await exporter.lag())[runner.name]["pending_entries"]
                bar.update(total=waiting if waiting < LAG_CAP else None)
            while (done := await exporter.export_once(runner.name)).entries:
                for name in EXPORT_COLUMNS[1:]:
                    row[name] += getattr(done, name)
                bar.advance(done.entries)
                if not bar.shown:
                    click.echo(f"{runner.name}: {done.entries} entries, {done.events} events, "
                               f"{done.delivered} delivered, {done.dead} dead")  # fmt: skip
                if not done.complete:
                    break
        rows.append(row)
    return rows


def _row(sink: str, done: RoundResult | None) -> dict[str, Any]:
    if done is None:
        return {"sink": sink, "entries": 0, "events": 0, "delivered": 0, "dead": 0}
    return {"sink": sink, "entries": done.entries, "events": done.events,
            "delivered": done.delivered, "dead": done.dead}  # fmt: skip


@click.command()
@click.option("--month", required=True, help="A calendar month in UTC, e.g. 2026-11.")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@json_option
@target
def margins(
    month: str, tenant_id: str | None, as_json: bool, config: str | None, url: str | None
) -> None:
    """Revenue (plan fee plus usage), cost and margin per tenant for a month."""
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in {"month": month, "tenant": tenant_id}.items() if v})
    report = call_admin(config, url, "GET", "/admin/v1/margins?" + query)
    if as_json:
        print_json(report)
        return
    columns = ["tenant", "plan", "requests", "plan_fee_usd", "usage_revenue_usd", "revenue_usd",
               "cost_usd", "margin_usd", "margin_percent"]  # fmt: skip
    total = {"tenant": "TOTAL", **report["total"]}
    if is_terminal():
        show_table(report["data"], columns, total=total, title=f"Margins {month} (UTC)")
    else:
        print_table([*report["data"], total], columns)


@click.command()
@click.option("--month", required=True, help="A calendar month in UTC, e.g. 2026-11.")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@click.option("--provider", default=None, help="Against this provider's own bill, not the sinks.")
@json_option
@target
def reconcile(
    month: str,
    tenant_id: str | None,
    provider: str | None,
    as_json: bool,
    config: str | None,
    url: str | None,
) -> None:
    """Ledger totals against what each billing sink was sent, per tenant and meter; with
    --provider, the ledger's cost against the provider's own bill, per day and model."""
    from urllib.parse import quote, urlencode

    if provider is not None:
        if tenant_id is not None:
            raise click.UsageError("--tenant does not go with --provider (a bill is per account)")
        path = f"/admin/v1/providers/{quote(provider, safe='')}/reconcile?"
        _provider_report(call_admin(config, url, "GET", path + urlencode({"month": month})),
                         as_json)  # fmt: skip
        return
    query = urlencode({k: v for k, v in {"month": month, "tenant": tenant_id}.items() if v})
    report = call_admin(config, url, "GET", "/admin/v1/reconciliation?" + query)
    columns = ["sink", "tenant", "meter", "ledger", "delivered", "dead", "pending", "matched"]
    matched = (
        "every meter matched" if report.get("matched") else "NOT matched: see dead and pending"
    )
    print_listing(report, columns, as_json, title=f"Reconciliation {month} (UTC)",
                  caption=f"{len(report['data'])} rows; {matched}")  # fmt: skip


def _provider_report(report: dict[str, Any], as_json: bool) -> None:
    """The provider reconciliation: every day and model, the month's totals, the verdict."""
    columns = ["day", "model", "ledger_usd", "provider_usd", "difference_usd",
               "difference_percent", "alert"]  # fmt: skip
    total = report["total"]
    verdict = (f"{len(report['mismatches'])} day/model differences, {report['alerts']} past "
               f"the threshold; unmapped provider lines: {total['unmapped_usd']} USD")  # fmt: skip
    if as_json:
        print_json(report)
    elif is_terminal():
        show_table(
            report["data"],
            columns,
            total={"day": "TOTAL", **total},
            caption=verdict,
            title=f"{report['provider']} bill against the ledger, {report['month']} (UTC)",
        )
    else:
        print_table([*report["data"], {"day": "TOTAL", **total}], columns)


@click.command()
@click.option("--month", required=True, help="A calendar month in UTC, e.g. 2026-11.")
@json_option
@target
def profitability(month: str, as_json: bool, config: str | None, url: str | None) -> None:
    """Per plan: its tenants' margin percentiles, the share that is profitable, and whether
    its 90th-percentile-usage tenant is profitable."""
    from urllib.parse import urlencode

    report = call_admin(config, url, "GET", "/admin/v1/plan-profitability?" + urlencode(
        {"month": month}))  # fmt: skip
    if as_json:
        print_json(report)
        return
    rows = [{**line, "p90_usage_tenant": _heavy(line["p90_usage_tenant"])}
            for line in report["data"]]  # fmt: skip
    columns = ["plan", "tenants", "margin_p10_usd", "margin_p50_usd", "margin_p90_usd",
               "profitable_share", "p90_usage_tenant", "margin_usd"]  # fmt: skip
    if is_terminal():
        show_table(rows, columns, title=f"Plan profitability {month} (UTC)")
    else:
        print_table(rows, columns)


def _heavy(tenant: dict[str, Any]) -> str:
    """The 90th-percentile-usage tenant, as a cell: its id, margin and whether it pays."""
    verdict = "profitable" if tenant["profitable"] else "loses money"
    return f"{tenant['tenant']} ({tenant['margin_usd']}, {verdict})"
