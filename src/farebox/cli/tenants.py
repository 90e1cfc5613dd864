"""``farebox tenants``: create and list tenants."""

from __future__ import annotations

import json
from typing import Any

import click

from farebox.cli.local import local_settings, run_local
from farebox.cli.output import print_table
from farebox.cli.target import remote, target


@click.group()
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
        result = remote(
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
        rows = remote(url, "GET", "/admin/v1/tenants")["data"]
    else:

        async def work(t: Any) -> list[Any]:
            return [tenant_json(x) for x in await t.list_tenants()]

        rows = run_local(config, work)
    print_table(rows, ["id", "name", "plan", "paused"])
