"""``farebox requests``: the request log (``GET /admin/v1/requests``), newest first, a page
at a time."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click

from farebox.cli.output import json_option, print_json, print_table
from farebox.cli.tables import column_totals
from farebox.cli.target import call_admin, target
from farebox.cli.terminal import is_terminal

COLUMNS = ("time", "tenant", "user", "feature", "model_served", "status", "cache",
           "input_tokens", "output_tokens", "cost_usd", "latency_ms")  # fmt: skip
SUMS = ("input_tokens", "output_tokens", "cost_usd")


@click.command("requests")
@click.option("--tenant", "tenant", default=None, help="Only this tenant (default: all).")
@click.option("--from", "start", default=None, help="From (unix seconds or ISO date/time).")
@click.option("--to", "end", default=None, help="Up to (exclusive): unix seconds or ISO.")
@click.option("--status", default=None, help="Only this status, e.g. ok or error.")
@click.option("--key", default=None, help="Only requests made with this key id.")
@click.option("--user", default=None, help="Only this end user (X-Farebox-User).")
@click.option("--feature", default=None, help="Only this feature (X-Farebox-Feature).")
@click.option("--model", default=None, help="Only this model.")
@click.option("--tag", default=None, help="Only requests whose metadata has NAME:VALUE.")
@click.option("--limit", type=click.IntRange(1, 200), default=None,
              help="Requests per page (default: the API's, 50).")  # fmt: skip
@click.option("--cursor", default=None, help="The next page: the cursor the last page gave.")
@json_option
@target
def requests_cmd(as_json: bool, config: str | None, url: str | None, **given: Any) -> None:
    """The request log, newest first: time, tenant, user, feature, model, status, cache
    (hit-exact, hit-semantic, miss, bypass), tokens, cost and latency of each request."""
    query = urlencode({k: v for k, v in given.items() if v is not None})
    page = call_admin(config, url, "GET", "/admin/v1/requests?" + query)
    if as_json:
        print_json(page)
        return
    rows = [row(entry) for entry in page["data"]]
    more = page.get("next_cursor")
    count = f"{len(rows)} request{'' if len(rows) == 1 else 's'}"
    total = column_totals(rows, SUMS, ("time", "TOTAL")) if rows else None
    caption = f"{count}; next page: --cursor {more}" if more else count
    print_table(rows, COLUMNS, total=total, title="Requests, newest first", caption=caption)
    if more and not is_terminal():
        click.echo(f"next page: --cursor {more}", err=True)


def row(entry: dict[str, Any]) -> dict[str, Any]:
    """One request log entry as a table row: its token counts flattened, its latency in
    tenths of a millisecond."""
    tokens = entry.get("tokens") or {}
    latency = entry.get("latency_ms")
    return {**entry, "input_tokens": tokens.get("input"), "output_tokens": tokens.get("output"),
            "latency_ms": None if latency is None else f"{latency:.1f}",
            "cache": entry.get("cache")}  # fmt: skip
