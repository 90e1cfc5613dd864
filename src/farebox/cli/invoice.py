"""``farebox invoice``: a tenant's invoice preview for a UTC month (locally with ``--config``,
or from a running gateway with ``--url``), as a rich table."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import click

from farebox.cli.output import json_option, print_json, print_table
from farebox.cli.target import call_admin, target
from farebox.cli.terminal import is_terminal

COLUMNS = ["line", "quantity", "unit", "amount_usd"]


@click.command()
@click.option("--tenant", "tenant_id", required=True, help="The tenant's id.")
@click.option("--month", required=True, help="A calendar month in UTC, e.g. 2026-11.")
@json_option
@target
def invoice(tenant_id: str, month: str, as_json: bool, config: str | None, url: str | None) -> None:
    """The invoice preview of a tenant for a month: plan fee, allowance, overage by tier,
    per-request, token and cache-hit charges, credits burned, and the exact total."""
    path = f"/admin/v1/tenants/{quote(tenant_id, safe='')}/invoice?" + urlencode({"month": month})
    report = call_admin(config, url, "GET", path)
    if as_json:
        print_json(report)
        return
    rows = [
        {"line": line["description"], "quantity": line["quantity"] or "",
         "unit": line["unit"] or "",
         "amount_usd": line["amount_usd"] if line["counted"] else f"({line['amount_usd']})"}
        for line in report["lines"]
    ]  # fmt: skip
    total = {"line": "TOTAL", "quantity": "", "unit": "", "amount_usd": report["total_usd"]}
    title = f"Invoice preview {report['tenant']} {month} (UTC), plan {report['plan']}"
    if is_terminal():
        print_table(rows, COLUMNS, total=total, title=title, numbers=("quantity",))
    else:
        print_table([*rows, total], COLUMNS)
