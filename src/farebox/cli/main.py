"""The ``farebox`` command."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import click

from farebox.cli.local import in_process, local_settings, record_served, run_local
from farebox.config.settings import Settings, admin_key_from_env, export_for_workers, load_settings
from farebox.core.periods import parse_period
from farebox.core.records import GROUP_BY
from farebox.errors import ConfigError, FareboxError
from farebox.gateway.admission import budget_ident


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


def _settings(config: str | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


def _run_uvicorn(
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


@click.group()
@click.version_option(package_name="farebox")
def main() -> None:
    """Farebox: a multi-tenant AI gateway with hard budgets and exact per-request cost."""


@main.command()
@click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None, help="farebox.yaml"
)
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8787).")
@click.option("--workers", type=int, default=None, help="Worker processes (default 1).")
def serve(config: str | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Start the gateway."""
    settings = _settings(config)
    server = settings.file.server
    host, port = host or server.host, port if port is not None else server.port
    _check_single_process(settings, workers or server.workers)
    record_served(settings, config)
    click.echo(f"Farebox listening on http://{host}:{port} ({settings.source})", err=True)
    _run_uvicorn(settings, config, host, port, workers or server.workers)


@main.command()
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
    settings = _settings(None, overrides)
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
    _run_uvicorn(settings, None, host, port, 1, overrides)


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


# --- admin mirrors -------------------------------------------------------------------


def _call(config: str | None, url: str | None, method: str, path: str, body: Any = None) -> Any:
    if url:
        return _remote(url, method, path, body)
    return in_process(config, method, path, body)


def _remote(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    key = admin_key_from_env()
    if not key:
        raise click.ClickException("--url needs the admin key in FAREBOX_ADMIN_KEY")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)  # noqa: S310
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise click.ClickException(f"{exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [{c: "" if r.get(c) is None else str(r[c]) for c in columns} for r in rows]
    widths = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in cells:
        click.echo("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())


_target = [
    click.option(
        "--config",
        type=click.Path(dir_okay=False),
        default=None,
        help="Work on this config's database.",
    ),
    click.option("--url", default=None, help="Work on a running gateway through its admin API."),
]


def target(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_target):
        fn = option(fn)
    return fn


@main.group()
def tenants() -> None:
    """Create and list tenants."""


@tenants.command("create")
@click.argument("tenant_id")
@click.option("--plan", default=None)
@click.option("--name", default=None)
@target
def tenants_create(
    tenant_id: str, plan: str | None, name: str | None, config: str | None, url: str | None
) -> None:
    from farebox.identity.tenancy import tenant_json

    if url:
        result = _remote(
            url, "POST", "/admin/v1/tenants", {"id": tenant_id, "name": name, "plan": plan}
        )
    else:
        settings = local_settings(config)
        plan = plan or settings.file.default_plan or "default"
        result = tenant_json(run_local(config, lambda t: t.create_tenant(tenant_id, name, plan)))
    click.echo(json.dumps(result, indent=2))


@tenants.command("list")
@target
def tenants_list(config: str | None, url: str | None) -> None:
    from farebox.identity.tenancy import tenant_json

    if url:
        rows = _remote(url, "GET", "/admin/v1/tenants")["data"]
    else:

        async def work(t: Any) -> list[Any]:
            return [tenant_json(x) for x in await t.list_tenants()]

        rows = run_local(config, work)
    _print_table(rows, ["id", "name", "plan", "paused"])


@main.group()
def keys() -> None:
    """Create and revoke keys."""


@keys.command("create")
@click.option("--tenant", "tenant_id", default=None, help="Tenant id (omit with --service).")
@click.option("--name", default="default")
@click.option("--service", is_flag=True, help="Create a service key (used with X-Farebox-Tenant).")
@target
def keys_create(
    tenant_id: str | None, name: str, service: bool, config: str | None, url: str | None
) -> None:
    if not service and not tenant_id:
        raise click.UsageError("--tenant is required (or --service)")
    if url:
        path = "/admin/v1/service-keys" if service else f"/admin/v1/tenants/{tenant_id}/keys"
        result = _remote(url, "POST", path, {"name": name})
        raw, key_id = result["key"], result["id"]
    else:
        kind = "service" if service else "tenant"
        record, raw = run_local(config, lambda t: t.create_key(tenant_id, name, kind=kind))
        key_id = record.id
    click.echo(f"key id: {key_id}", err=True)
    click.echo(raw)


@keys.command("revoke")
@click.argument("key_id")
@target
def keys_revoke(key_id: str, config: str | None, url: str | None) -> None:
    if url:
        _remote(url, "DELETE", f"/admin/v1/keys/{key_id}")
    else:
        run_local(config, lambda t: t.revoke_key(key_id))
    click.echo(f"revoked {key_id}")


@main.group()
def budgets() -> None:
    """Show, set and temporarily increase budgets."""


@budgets.command("show")
@click.argument("tenant_id")
@target
def budgets_show(tenant_id: str, config: str | None, url: str | None) -> None:
    rows = _call(config, url, "GET", f"/admin/v1/tenants/{tenant_id}/budgets")["data"]
    columns = ["scope", "period", "name", "limit_usd", "used_usd", "reserved_usd",
               "remaining_usd", "resets_at"]  # fmt: skip
    _print_table(rows, columns)


@budgets.command("set")
@click.argument("tenant_id")
@click.option("--period", required=True, help="day, week, month, lifetime or rolling:1h")
@click.option("--limit", "limit_usd", required=True, help="USD, e.g. 25 or 0.50")
@click.option("--scope", default="tenant", type=click.Choice(["tenant", "key", "feature", "user"]))
@click.option("--name", default=None, help="The feature or user, for those scopes.")
@click.option("--rollover-cap", default=None, help="USD of unused budget carried over, at most.")
@target
def budgets_set(tenant_id: str, period: str, limit_usd: str, scope: str, name: str | None,
                rollover_cap: str | None, config: str | None, url: str | None) -> None:  # fmt: skip
    """Override one of the plan's budgets for this tenant."""
    tenant = _call(config, url, "GET", f"/admin/v1/tenants/{tenant_id}")
    item = {"scope": scope, "period": period, "limit_usd": limit_usd, "name": name,
            "rollover_cap_usd": rollover_cap}  # fmt: skip
    item = {k: v for k, v in item.items() if v is not None}
    same = (scope, period, name)
    rest = [b for b in tenant.get("budgets", []) if budget_ident(b) != same]
    _call(config, url, "PATCH", f"/admin/v1/tenants/{tenant_id}", {"budgets": [*rest, item]})
    click.echo(f"{tenant_id}: {scope} {period} budget set to ${limit_usd}")


@budgets.command("increase")
@click.argument("tenant_id")
@click.option("--period", required=True)
@click.option("--amount", required=True, help="USD to add")
@click.option("--for", "duration", default="24h", help="How long: 30m, 24h, 7d")
@click.option("--scope", default="tenant")
@click.option("--name", default=None)
@target
def budgets_increase(tenant_id: str, period: str, amount: str, duration: str, scope: str,
                     name: str | None, config: str | None, url: str | None) -> None:  # fmt: skip
    """Raise a budget temporarily."""
    try:
        seconds = parse_period(f"rolling:{duration}").seconds
    except ValueError:
        raise click.BadParameter(
            f"{duration!r}: expected e.g. 30m, 24h or 7d", param_hint="--for"
        ) from None
    body = {"scope": scope, "period": period, "name": name, "amount_usd": amount,
            "expires_in_s": seconds}  # fmt: skip
    _call(config, url, "POST", f"/admin/v1/tenants/{tenant_id}/budget-increases", body)
    click.echo(f"{tenant_id}: {scope} {period} budget raised by ${amount} for {duration}")


@main.command()
@click.option("--tenant", "tenant_id", default=None)
@click.option("--group-by", "group_by", default=None, type=click.Choice(list(GROUP_BY)))
@click.option("--from", "start", default=None, help="Unix seconds or ISO date/time.")
@click.option("--to", "end", default=None)
@target
def usage(
    tenant_id: str | None,
    group_by: str | None,
    start: str | None,
    end: str | None,
    config: str | None,
    url: str | None,
) -> None:
    """Usage, cost and revenue."""
    from urllib.parse import urlencode

    from farebox.api.admin.router import parse_time
    from farebox.identity.tenancy import usage_json

    if url:
        query = {
            k: v
            for k, v in {
                "tenant": tenant_id,
                "group_by": group_by,
                "from": start,
                "to": end,
            }.items()
            if v
        }
        rows = _remote(url, "GET", "/admin/v1/usage?" + urlencode(query))["data"]
    else:
        try:
            window = parse_time(start, "from"), parse_time(end, "to")
        except FareboxError as exc:
            raise click.ClickException(exc.message) from None
        found = run_local(config, lambda t: t.usage(tenant_id, window[0], window[1], group_by))
        rows = [usage_json(r, group_by) for r in found]
    columns = ([group_by] if group_by else []) + [
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "revenue_usd",
    ]
    _print_table(rows, columns)


@main.command("export")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None)
@click.option("--sink", "sinks", multiple=True, help="Only these billing sinks (default: all).")
@click.option("--follow", is_flag=True, help="Keep exporting new ledger entries.")
@click.option("--from", "start", default=None, help="Replay from (unix seconds or ISO date).")
@click.option("--to", "end", default=None, help="Replay up to (exclusive).")
def export_cmd(
    config: str | None, sinks: tuple[str, ...], follow: bool, start: str | None, end: str | None
) -> None:
    """Export the ledger to the billing sinks (or replay a range of it, idempotently)."""
    from farebox.api.admin.router import parse_time
    from farebox.app import make_store
    from farebox.billing.exporter import Exporter, build_runners
    from farebox.http.client import HttpClient

    settings = _settings(config)
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


@main.command()
@click.option("--month", required=True, help="A calendar month in UTC, e.g. 2026-11.")
@click.option("--tenant", "tenant_id", default=None)
@target
def margins(month: str, tenant_id: str | None, config: str | None, url: str | None) -> None:
    """Revenue (plan fee plus usage), cost and margin per tenant for a month."""
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in {"month": month, "tenant": tenant_id}.items() if v})
    report = _call(config, url, "GET", "/admin/v1/margins?" + query)
    columns = ["tenant", "plan", "requests", "plan_fee_usd", "usage_revenue_usd", "revenue_usd",
               "cost_usd", "margin_usd", "margin_percent"]  # fmt: skip
    _print_table([*report["data"], {"tenant": "TOTAL", **report["total"]}], columns)


@main.command()
@click.option("--month", required=True, help="A calendar month in UTC, e.g. 2026-11.")
@click.option("--tenant", "tenant_id", default=None)
@target
def reconcile(month: str, tenant_id: str | None, config: str | None, url: str | None) -> None:
    """Ledger totals against what each billing sink was sent, per tenant and meter."""
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in {"month": month, "tenant": tenant_id}.items() if v})
    report = _call(config, url, "GET", "/admin/v1/reconciliation?" + query)
    columns = ["sink", "tenant", "meter", "ledger", "delivered", "dead", "pending", "matched"]
    _print_table(report["data"], columns)


def _register_anomaly_commands() -> None:
    from farebox.cli.anomaly import register

    register(main, tenants, keys, target, _call, _print_table, _settings)


_register_anomaly_commands()


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
