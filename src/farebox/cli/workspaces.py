"""``farebox workspaces``: create, list, show, change and delete a tenant's workspaces (its
teams or projects, each with its own keys, budgets and rate limits), through the admin API
(of the local database, or of ``--url``)."""

from __future__ import annotations

from typing import Any

import click

from farebox.cli.output import json_option, print_json, print_listing, print_record
from farebox.cli.target import call_admin, target
from farebox.cli.tenants import _json_value

JSON_OPTIONS = (
    ("--budgets", list, "list", "The workspace's own budgets: a JSON list of budget objects "
     '(scope workspace, key, feature or user), e.g. \'[{"scope": "workspace", "period": '
     '"month", "limit_usd": "200"}]\'.'),
    ("--rate-limits", list, "list", "The workspace's own rate limits: a JSON list (scope "
     "workspace, key, user or ip)."),
    ("--metadata", dict, "object", 'Metadata: a JSON object, e.g. \'{"cost_center": "42"}\'.'),
)  # fmt: skip


def json_options(fn: Any) -> Any:
    for flag, kind, what, help_text in reversed(JSON_OPTIONS):
        fn = click.option(flag, default=None, callback=_json_value(kind, what), help=help_text)(fn)
    return fn


def path(tenant_id: str, workspace_id: str | None = None) -> str:
    base = f"/admin/v1/tenants/{tenant_id}/workspaces"
    return base if workspace_id is None else f"{base}/{workspace_id}"


@click.group()
def workspaces() -> None:
    """Create, list, show, change and delete a tenant's workspaces."""


@workspaces.command("create")
@click.argument("tenant_id")
@click.argument("workspace_id")
@click.option("--name", default=None, help="A display name (default: the id).")
@json_options
@target
def workspaces_create(tenant_id: str, workspace_id: str, config: str | None, url: str | None,
                      **given: Any) -> None:  # fmt: skip
    """Create a workspace and print it as JSON."""
    body = {"id": workspace_id, **{k: v for k, v in given.items() if v is not None}}
    print_json(call_admin(config, url, "POST", path(tenant_id), body))


@workspaces.command("list")
@click.argument("tenant_id")
@json_option
@target
def workspaces_list(tenant_id: str, as_json: bool, config: str | None, url: str | None) -> None:
    """List a tenant's workspaces (``default`` always among them)."""
    result = call_admin(config, url, "GET", path(tenant_id))
    rows = {
        **result,
        "data": [
            {**w, "budgets": len(w["budgets"]), "rate_limits": len(w["rate_limits"])}
            for w in result["data"]
        ],
    }
    print_listing(result if as_json else rows, ["id", "name", "budgets", "rate_limits"], as_json,
                  title=f"Workspaces of tenant {tenant_id}")  # fmt: skip


@workspaces.command("get")
@click.argument("tenant_id")
@click.argument("workspace_id")
@json_option
@target
def workspaces_get(tenant_id: str, workspace_id: str, as_json: bool, config: str | None,
                   url: str | None) -> None:  # fmt: skip
    """Show one workspace: its budgets, rate limits and metadata."""
    print_record(call_admin(config, url, "GET", path(tenant_id, workspace_id)), as_json)


@workspaces.command("update")
@click.argument("tenant_id")
@click.argument("workspace_id")
@click.option("--name", default=None, help="A new display name.")
@json_options
@target
def workspaces_update(tenant_id: str, workspace_id: str, config: str | None, url: str | None,
                      **given: Any) -> None:  # fmt: skip
    """Change a workspace (PATCH): only the fields given change. Prints it as JSON."""
    body = {k: v for k, v in given.items() if v is not None}
    if not body:
        raise click.UsageError("Nothing to change: give at least one option (see --help).")
    print_json(call_admin(config, url, "PATCH", path(tenant_id, workspace_id), body))


@workspaces.command("delete")
@click.argument("tenant_id")
@click.argument("workspace_id")
@target
def workspaces_delete(tenant_id: str, workspace_id: str, config: str | None,
                      url: str | None) -> None:  # fmt: skip
    """Delete a workspace (refused for ``default`` and while it has live keys)."""
    call_admin(config, url, "DELETE", path(tenant_id, workspace_id))
    click.echo(f"deleted workspace {workspace_id} of tenant {tenant_id}")
