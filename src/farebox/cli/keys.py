"""``farebox keys``: create and revoke virtual keys."""

from __future__ import annotations

import click

from farebox.cli.local import run_local
from farebox.cli.target import remote, target


@click.group()
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
        result = remote(url, "POST", path, {"name": name})
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
        remote(url, "DELETE", f"/admin/v1/keys/{key_id}")
    else:
        run_local(config, lambda t: t.revoke_key(key_id))
    click.echo(f"revoked {key_id}")
