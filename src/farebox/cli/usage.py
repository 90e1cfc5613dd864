"""``farebox usage``: spend and tokens from the ledger, grouped."""

from __future__ import annotations

import click

from farebox.cli.local import run_local
from farebox.cli.output import print_table
from farebox.cli.target import remote, target
from farebox.core.records import GROUP_BY
from farebox.errors import FareboxError


@click.command()
@click.option("--tenant", "tenant_id", default=None)
@click.option("--group-by", "group_by", default=None, type=click.Choice(list(GROUP_BY)))
@click.option("--from", "start", default=None, help="Unix seconds or ISO date/time.")
@click.option("--to", "end", default=None)
@target
def usage(
    tenant_id: str | None,
    group_by: str | None,
    start: str | None,
    end: str | None,
    config: str | None,
    url: str | None,
) -> None:
    """Usage, cost and revenue."""
    from urllib.parse import urlencode

    from farebox.api.admin.router import parse_time
    from farebox.identity.tenancy import usage_json

    if url:
        query = {
            k: v
            for k, v in {
                "tenant": tenant_id,
                "group_by": group_by,
                "from": start,
                "to": end,
            }.items()
            if v
        }
        rows = remote(url, "GET", "/admin/v1/usage?" + urlencode(query))["data"]
    else:
        try:
            window = parse_time(start, "from"), parse_time(end, "to")
        except FareboxError as exc:
            raise click.ClickException(exc.message) from None
        found = run_local(config, lambda t: t.usage(tenant_id, window[0], window[1], group_by))
        rows = [usage_json(r, group_by) for r in found]
    columns = ([group_by] if group_by else []) + [
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "revenue_usd",
    ]
    print_table(rows, columns)
