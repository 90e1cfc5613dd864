"""``farebox export``, ``farebox margins`` and ``farebox reconcile``: the billing side."""

from __future__ import annotations

import asyncio

import click

from farebox.cli.output import json_option, print_json, print_listing, print_table
from farebox.cli.target import call_admin, settings_or_exit, target
from farebox.errors import FareboxError


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
    from farebox.app import make_store
    from farebox.billing.exporter import Exporter, build_runners
    from farebox.http.client import HttpClient

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

    async def run() -> None:
        store, http = make_store(settings), HttpClient()
        await store.open()
        exporter = Exporter(store, runners, http, batch=settings.file.billing.batch,
                            hour_grace_s=settings.file.billing.hour_grace_s)  # fmt: skip
        try:
            if not replay and not await store.claim_exporter():
                raise click.ClickException("another process already exports this ledger")
            for runner in runners:
                if replay:
                    done = await exporter.replay(runner.name, *window)
                    click.echo(f"{runner.name}: replayed {done.events} events "
                               f"({done.delivered} delivered, {done.dead} dead)")  # fmt: skip
                    continue
                while (done := await exporter.export_once(runner.name)).entries:
                    click.echo(f"{runner.name}: {done.entries} entries, {done.events} events, "
                               f"{done.delivered} delivered, {done.dead} dead")  # fmt: skip
                    if not done.complete:
                        break
            if follow and not replay:
                await exporter.start(settings.file.billing.interval_s)  # the claim is held
                await asyncio.Event().wait()
        finally:
            await exporter.stop()
            await http.aclose()
            await store.close()

    try:
        asyncio.run(run())
    except FareboxError as exc:
        raise click.ClickException(exc.message) from None


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
    print_table([*report["data"], {"tenant": "TOTAL", **report["total"]}], columns)


@click.command()
@click.option("--month", required=True, help="A calendar month in UTC, e.g. 2026-11.")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@json_option
@target
def reconcile(
    month: str, tenant_id: str | None, as_json: bool, config: str | None, url: str | None
) -> None:
    """Ledger totals against what each billing sink was sent, per tenant and meter."""
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in {"month": month, "tenant": tenant_id}.items() if v})
    report = call_admin(config, url, "GET", "/admin/v1/reconciliation?" + query)
    columns = ["sink", "tenant", "meter", "ledger", "delivered", "dead", "pending", "matched"]
    print_listing(report, columns, as_json)
