"""``farebox admin-keys``: create, list and revoke admin keys (``fba_...``, each with a role),
through the admin API (``/admin/v1/admin-keys``): on a running gateway (``--url``, with an
owner's key in FAREBOX_ADMIN_KEY) or on the local database."""

from __future__ import annotations

from urllib.parse import quote

import click

from farebox.cli.output import iso, json_option, print_json, print_table
from farebox.cli.target import call_admin, target
from farebox.core.records import ADMIN_ROLES

COLUMNS = ("id", "name", "role", "tenant", "prefix", "created_at", "revoked")


@click.group("admin-keys")
def admin_keys() -> None:
    """Admin keys with roles: owner, operator, billing, viewer, tenant_admin."""


@admin_keys.command("create")
@click.option("--name", required=True, help="A name for the key.")
@click.option("--role", type=click.Choice(ADMIN_ROLES), required=True, help="The key's role.")
@click.option("--tenant", "tenant_id", default=None,
              help="The tenant of a tenant_admin key (required for that role only).")  # fmt: skip
@target
def admin_keys_create(
    name: str, role: str, tenant_id: str | None, config: str | None, url: str | None
) -> None:
    """Create an admin key and print its secret (shown this once; the key id goes to
    stderr)."""
    if (role == "tenant_admin") != (tenant_id is not None):
        raise click.UsageError("--tenant is required for a tenant_admin key, and only for it")
    body = {"name": name, "role": role, **({"tenant": tenant_id} if tenant_id else {})}
    result = call_admin(config, url, "POST", "/admin/v1/admin-keys", body)
    click.echo(f"admin key id: {result['id']} ({result['role']})", err=True)
    click.echo(result["key"])


@admin_keys.command("list")
@json_option
@target
def admin_keys_list(as_json: bool, config: str | None, url: str | None) -> None:
    """List the admin keys, revoked ones included (never their secrets)."""
    result = call_admin(config, url, "GET", "/admin/v1/admin-keys")
    if as_json:
        print_json(result)
        return
    rows = [{**k, "tenant": k["tenant"] or "-", "created_at": iso(k["created_at"])}
            for k in result["data"]]  # fmt: skip
    print_table(rows, COLUMNS, title="Admin keys")


@admin_keys.command("revoke")
@click.argument("key_id")
@target
def admin_keys_revoke(key_id: str, config: str | None, url: str | None) -> None:
    """Revoke an admin key: it opens nothing from the next request on."""
    call_admin(config, url, "DELETE", f"/admin/v1/admin-keys/{quote(key_id, safe='')}")
    click.echo(f"revoked {key_id}")
