"""``farebox budgets``: show, set, unset and temporarily increase budgets."""

from __future__ import annotations

from typing import Any

import click

from farebox.cli.output import json_option, print_listing
from farebox.cli.target import call_admin, target
from farebox.core.periods import parse_period
from farebox.gateway.budget_scope import budget_ident

SCOPES = ("tenant", "key", "feature", "user", "workspace")
SCOPE_HELP = (
    "Which budget: tenant (default), key, feature, user, or workspace (each of the tenant's "
    "workspaces its own; set one workspace's with farebox workspaces update)."
)
NAME_HELP = "The key id, feature or user, for those scopes."


@click.group()
def budgets() -> None:
    """Show, set, unset and temporarily increase budgets."""


@budgets.command("show")
@click.argument("tenant_id")
@json_option
@target
def budgets_show(tenant_id: str, as_json: bool, config: str | None, url: str | None) -> None:
    """Every budget in force for a tenant and its keys: limit, used, reserved, remaining."""
    result = call_admin(config, url, "GET", f"/admin/v1/tenants/{tenant_id}/budgets")
    columns = ["scope", "period", "name", "limit_usd", "used_usd", "reserved_usd",
               "remaining_usd", "resets_at"]  # fmt: skip
    print_listing(result, columns, as_json)


@budgets.command("set")
@click.argument("tenant_id")
@click.option("--period", required=True, help="day, week, month, lifetime or rolling:1h")
@click.option("--limit", "limit_usd", required=True, help="USD, e.g. 25 or 0.50")
@click.option("--scope", default="tenant", type=click.Choice(SCOPES), help=SCOPE_HELP)
@click.option("--name", default=None, help=NAME_HELP)
@click.option("--rollover-cap", default=None, help="USD of unused budget carried over, at most.")
@target
def budgets_set(tenant_id: str, period: str, limit_usd: str, scope: str, name: str | None,
                rollover_cap: str | None, config: str | None, url: str | None) -> None:  # fmt: skip
    """Override one of the plan's budgets for this tenant."""
    item = {"scope": scope, "period": period, "limit_usd": limit_usd, "name": name,
            "rollover_cap_usd": rollover_cap}  # fmt: skip
    item = {k: v for k, v in item.items() if v is not None}
    _, rest = _own_budgets(config, url, tenant_id, (scope, period, name))
    call_admin(config, url, "PATCH", f"/admin/v1/tenants/{tenant_id}", {"budgets": [*rest, item]})
    click.echo(f"{tenant_id}: {scope} {period} budget set to ${limit_usd}")


@budgets.command("increase")
@click.argument("tenant_id")
@click.option("--period", required=True, help="The period of the budget to raise, e.g. day.")
@click.option("--amount", required=True, help="USD to add")
@click.option("--for", "duration", default="24h", help="How long: 30m, 24h, 7d")
@click.option("--scope", default="tenant", help=SCOPE_HELP)
@click.option("--name", default=None, help=NAME_HELP)
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
    call_admin(config, url, "POST", f"/admin/v1/tenants/{tenant_id}/budget-increases", body)
    click.echo(f"{tenant_id}: {scope} {period} budget raised by ${amount} for {duration}")


@budgets.command("unset")
@click.argument("tenant_id")
@click.option("--period", required=True, help="The period of the budget to remove, e.g. day.")
@click.option("--scope", default="tenant", type=click.Choice(SCOPES), help=SCOPE_HELP)
@click.option("--name", default=None, help=NAME_HELP)
@target
def budgets_unset(tenant_id: str, period: str, scope: str, name: str | None,
                  config: str | None, url: str | None) -> None:  # fmt: skip
    """Remove a budget set for this tenant: the plan's budget (if any) applies again."""
    own, rest = _own_budgets(config, url, tenant_id, (scope, period, name))
    if len(rest) == len(own):
        which = f"{scope} {period} budget" + (f" for {name}" if name else "")
        raise click.ClickException(
            f"{tenant_id} has no {which} of its own to unset; "
            f"`farebox budgets show {tenant_id}` lists the budgets in force"
        )
    call_admin(config, url, "PATCH", f"/admin/v1/tenants/{tenant_id}", {"budgets": rest})
    click.echo(f"{tenant_id}: {scope} {period} budget unset; the plan's budgets apply")


def _own_budgets(
    config: str | None, url: str | None, tenant_id: str, ident: tuple[str, str, str | None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tenant's own budgets, and the same without the one ``ident`` names (scope, period,
    name): what ``set`` replaces and ``unset`` removes, in one PATCH of the list."""
    tenant = call_admin(config, url, "GET", f"/admin/v1/tenants/{tenant_id}")
    own: list[dict[str, Any]] = tenant.get("budgets", [])
    return own, [b for b in own if budget_ident(b) != ident]
