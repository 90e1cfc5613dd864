"""``farebox usage``: spend and tokens from the ledger, grouped."""

from __future__ import annotations

from urllib.parse import urlencode

import click

from farebox.cli.output import json_option, print_listing
from farebox.cli.tables import column_totals
from farebox.cli.target import call_admin, target
from farebox.core.records import GROUP_BY


@click.command()
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all).")
@click.option("--group-by", "group_by", default=None, type=click.Choice(list(GROUP_BY)),
              help="One row per value of this field (default: one row in all).")  # fmt: skip
@click.option("--from", "start", default=None, help="Unix seconds or ISO date/time.")
@click.option("--to", "end", default=None, help="Up to (exclusive): unix seconds or ISO date/time.")
@json_option
@target
def usage(
    tenant_id: str | None,
    group_by: str | None,
    start: str | None,
    end: str | None,
    as_json: bool,
    config: str | None,
    url: str | None,
) -> None:
    """Usage, cost and revenue."""
    given = {"tenant": tenant_id, "group_by": group_by, "from": start, "to": end}
    query = urlencode({k: v for k, v in given.items() if v})
    result = call_admin(config, url, "GET", "/admin/v1/usage?" + query)
    sums = ["requests", "input_tokens", "output_tokens", "cost_usd", "revenue_usd"]
    columns = ([group_by] if group_by else []) + sums
    total = column_totals(result["data"], sums, (group_by, "TOTAL")) if group_by else None
    title = f"Usage by {group_by}" if group_by else "Usage"
    print_listing(result, columns, as_json, total=total, title=title)
