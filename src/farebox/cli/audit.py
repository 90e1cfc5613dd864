"""``farebox audit``: list the admin audit trail, and verify its hash chain (issue [14]).

Both read through the admin API (``GET /admin/v1/audit``): in process on the local database,
or a running gateway's with ``--url``. ``verify`` walks the whole chain oldest first and exits
1 naming the first bad record (its seq, and whether it was edited or a record before it was
deleted or inserted); 0 when it holds."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click

from farebox.cli.output import iso, json_option, print_json, print_table
from farebox.cli.target import call_admin, target

COLUMNS = ("seq", "at", "actor", "role", "action", "target", "outcome", "status", "ip")
PAGE = 1000


@click.group()
def audit() -> None:
    """List the admin audit trail and verify its hash chain."""


@audit.command("list")
@click.option("--actor", default=None, help="Only this actor (an admin key id, env, cli:<user>).")
@click.option("--action", default=None, help='Only this action, e.g. "POST /tenants".')
@click.option("--target", "target_", default=None, help="Only this target, e.g. tenant:acme.")
@click.option("--from", "start", default=None, help="From this time (unix seconds or ISO 8601).")
@click.option("--to", "end", default=None, help="Before this time (unix seconds or ISO 8601).")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="At most this many records (newest first).",
)
@json_option
@target
def audit_list(actor: str | None, action: str | None, target_: str | None, start: str | None,
               end: str | None, limit: int, as_json: bool, config: str | None,
               url: str | None) -> None:  # fmt: skip
    """The newest audit records first (with --json: their changes too)."""
    given = {"actor": actor, "action": action, "target": target_, "from": start, "to": end,
             "limit": limit}  # fmt: skip
    query = urlencode({k: v for k, v in given.items() if v is not None})
    result = call_admin(config, url, "GET", f"/admin/v1/audit?{query}")
    if as_json:
        print_json(result)
        return
    rows = [{**r, "at": iso(r["at"])} for r in result["data"]]
    print_table(rows, COLUMNS, title="Audit trail", caption=f"{len(rows)} records")


@audit.command("verify")
@target
def audit_verify(config: str | None, url: str | None) -> None:
    """Check the hash chain from the first record to the last: exit 0 when it holds, 1
    naming the first record that was edited, or after which one was deleted or inserted."""
    from farebox.identity.audit import Walk, record_of

    walk, count, cursor = Walk(), 0, 0
    while True:
        page = _page(config, url, cursor)
        for data in page:
            count += 1
            found = walk.step(record_of(data))
            if found is not None:
                click.echo(f"chain broken at seq {found.seq}: {found.reason}", err=True)
                raise SystemExit(1)
        if len(page) < PAGE:
            break
        cursor = walk.seq
    head = walk.hash if count else "none"
    click.echo(f"chain intact: {count} records (head seq {walk.seq}, hash {head})")


def _page(config: str | None, url: str | None, cursor: int) -> list[dict[str, Any]]:
    query = urlencode({"order": "asc", "limit": PAGE, "cursor": cursor})
    result = call_admin(config, url, "GET", f"/admin/v1/audit?{query}")
    data: list[dict[str, Any]] = result["data"]
    return data
