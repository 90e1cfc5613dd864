"""``farebox tenants``: create, list, show and change tenants (pause and resume are added by
``farebox.cli.anomaly``)."""

from __future__ import annotations

import json
from typing import Any

import click

from farebox.cli.local import Note, run_local
from farebox.cli.output import json_option, print_json, print_listing, print_record
from farebox.cli.target import call_admin, target, where
from farebox.identity.tenancy import BILLING_FIELDS

BILLING_IDS = tuple(sorted(BILLING_FIELDS))  # the PATCH body's ``billing`` object


@click.group()
def tenants() -> None:
    """Create, list, show, change, pause and resume tenants."""


@tenants.command("create")
@click.argument("tenant_id")
@click.option("--plan", default=None, help="The tenant's plan (default: the config's default).")
@click.option("--name", default=None, help="A display name.")
@target
def tenants_create(
    tenant_id: str, plan: str | None, name: str | None, config: str | None, url: str | None
) -> None:
    """Create a tenant and print it as JSON."""
    from farebox.identity.tenancy import tenant_json

    found = where(config, url)
    if found.api is not None:
        body = {"id": tenant_id, "name": name, "plan": plan}
        result = found.api("POST", "/admin/v1/tenants", body)
    else:
        settings = found.settings
        assert settings is not None
        plan = plan or settings.file.default_plan or "default"
        made = run_local(settings, lambda t: t.create_tenant(tenant_id, name, plan),
                         lambda t: Note("POST /tenants", f"tenant:{tenant_id}",
                                        t and tenant_json(t), 201))  # fmt: skip
        result = tenant_json(made)
    click.echo(json.dumps(result, indent=2))


@tenants.command("list")
@json_option
@target
def tenants_list(as_json: bool, config: str | None, url: str | None) -> None:
    """List every tenant with its plan and whether it is paused."""
    result = call_admin(config, url, "GET", "/admin/v1/tenants")
    count = len(result["data"])
    print_listing(result, ["id", "name", "plan", "paused"], as_json, title="Tenants",
                  caption=f"{count} tenant{'' if count == 1 else 's'}")  # fmt: skip


@tenants.command("get")
@click.argument("tenant_id")
@json_option
@target
def tenants_get(tenant_id: str, as_json: bool, config: str | None, url: str | None) -> None:
    """Show one tenant: plan, pause, billing ids, metadata, its own budgets and limits."""
    print_record(call_admin(config, url, "GET", f"/admin/v1/tenants/{tenant_id}"), as_json)


def _json_value(kind: type, what: str) -> Any:
    """A click callback that parses an option's value as JSON of the given kind."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON ({exc})") from None
        if not isinstance(parsed, kind):
            raise click.BadParameter(f"must be a JSON {what}")
        return parsed

    return parse


@tenants.command("update")
@click.argument("tenant_id")
@click.option("--plan", default=None, help="Move the tenant to this plan.")
@click.option("--name", default=None, help="A new display name.")
@click.option("--stripe-customer-id", default=None, help="The tenant's Stripe customer id.")
@click.option("--lago-external-subscription-id", default=None,
              help="The tenant's Lago external subscription id.")  # fmt: skip
@click.option("--metronome-customer-id", default=None, help="The tenant's Metronome customer id.")
@click.option("--openmeter-subject", default=None, help="The tenant's OpenMeter subject.")
@click.option(
    "--metadata",
    default=None,
    callback=_json_value(dict, "object"),
    help='Replace the metadata with this JSON object, e.g. \'{"team": "x"}\'.',
)
@click.option(
    "--budgets",
    default=None,
    callback=_json_value(list, "list"),
    help="Replace the tenant's own budgets with this JSON list of budget objects.",
)
@click.option("--rate-limits", default=None, callback=_json_value(list, "list"),
              help="Replace the tenant's own rate limits with this JSON list.")  # fmt: skip
@target
def tenants_update(tenant_id: str, config: str | None, url: str | None, **given: Any) -> None:
    """Change a tenant (PATCH): only the fields given change. Prints the tenant as JSON."""
    body = patch_body(given)
    if not body:
        raise click.UsageError("Nothing to change: give at least one option (see --help).")
    print_json(call_admin(config, url, "PATCH", f"/admin/v1/tenants/{tenant_id}", body))


def patch_body(given: dict[str, Any]) -> dict[str, Any]:
    """The options given, as the admin API's tenant PATCH body."""
    body = {k: v for k, v in given.items() if k not in BILLING_IDS and v is not None}
    billing = {k: given[k] for k in BILLING_IDS if given.get(k) is not None}
    if billing:
        body["billing"] = billing
    return body
