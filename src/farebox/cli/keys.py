"""``farebox keys``: create, list and revoke virtual keys (pause and resume are added by
``farebox.cli.anomaly``)."""

from __future__ import annotations

from typing import Any

import click

from farebox.cli.local import Note, run_local
from farebox.cli.output import iso, json_option, print_json, print_table
from farebox.cli.target import call_admin, target, where
from farebox.cli.tenants import _json_value
from farebox.identity.tenancy import key_json

KEY_COLUMNS = ("id", "name", "kind", "prefix", "created_at", "expires_at", "revoked", "paused",
               "workspace")  # fmt: skip


@click.group()
def keys() -> None:
    """Create, list, revoke, pause and resume keys."""


@keys.command("create")
@click.option("--tenant", "tenant_id", default=None, help="Tenant id (omit with --service).")
@click.option("--name", default="default", help="A name for the key (default: default).")
@click.option("--service", is_flag=True, help="Create a service key (used with X-Farebox-Tenant).")
@click.option("--workspace", default=None, help="The tenant's workspace the key belongs to "
              "(default: default).")  # fmt: skip
@click.option(
    "--metadata",
    default=None,
    callback=_json_value(dict, "object"),
    help='Key metadata: a JSON object, e.g. \'{"user_email": "a@example.com"}\'.',
)
@click.option("--alert-threshold", type=click.IntRange(1, 100), default=None,
              help="Percent of the key's own budget that fires its budget alert.")  # fmt: skip
@target
def keys_create(
    tenant_id: str | None, name: str, service: bool, config: str | None, url: str | None,
    workspace: str | None = None, metadata: dict[str, object] | None = None,
    alert_threshold: int | None = None,
) -> None:  # fmt: skip
    """Create a key and print its secret (shown this once; the key id goes to stderr)."""
    if not service and not tenant_id:
        raise click.UsageError("--tenant is required (or --service)")
    extra = {k: v for k, v in (("workspace", workspace), ("metadata", metadata),
                               ("alert_threshold", alert_threshold)) if v is not None}  # fmt: skip
    if extra and service:
        raise click.UsageError("--workspace, --metadata and --alert-threshold are for tenant keys")
    found = where(config, url)
    if found.api is not None or extra:  # the admin API checks the workspace and the metadata
        path = "/admin/v1/service-keys" if service else f"/admin/v1/tenants/{tenant_id}/keys"
        result = call_admin(config, url, "POST", path, {"name": name, **extra})
        raw, key_id = result["key"], result["id"]
    else:
        assert found.settings is not None
        kind = "service" if service else "tenant"
        action = "POST /service-keys" if service else "POST /tenants/{tenant_id}/keys"
        record, raw = run_local(found.settings, lambda t: t.create_key(tenant_id, name, kind=kind),
                                lambda made: _created(action, made))  # fmt: skip
        key_id = record.id
    click.echo(f"key id: {key_id}", err=True)
    click.echo(raw)


def _created(action: str, made: tuple[Any, str] | None) -> Note:
    """A created key's audit note: the key, never its secret."""
    key = made[0] if made else None
    return Note(action, f"key:{key.id}" if key else "key:", key and key_json(key), 201)


@keys.command("list")
@click.option(
    "--tenant",
    "tenant_id",
    required=True,
    help="The tenant whose keys to list (the admin API lists keys per tenant).",
)
@json_option
@target
def keys_list(tenant_id: str, as_json: bool, config: str | None, url: str | None) -> None:
    """List a tenant's keys, revoked ones included (never their secrets)."""
    result = call_admin(config, url, "GET", f"/admin/v1/tenants/{tenant_id}/keys")
    if as_json:
        print_json(result)
        return
    rows = [
        {**k, "created_at": iso(k["created_at"]), "expires_at": iso(k["expires_at"])}
        for k in result["data"]
    ]
    print_table(rows, KEY_COLUMNS, title=f"Keys of tenant {tenant_id}")


@keys.command("revoke")
@click.argument("key_id")
@target
def keys_revoke(key_id: str, config: str | None, url: str | None) -> None:
    """Revoke a key: requests with it are refused from now on."""
    found = where(config, url)
    if found.api is not None:
        found.api("DELETE", f"/admin/v1/keys/{key_id}", None)
    else:
        assert found.settings is not None
        run_local(
            found.settings,
            lambda t: t.revoke_key(key_id),
            lambda k: Note("DELETE /keys/{key_id}", f"key:{key_id}", k and key_json(k)),
        )
    click.echo(f"revoked {key_id}")
