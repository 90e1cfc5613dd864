"""``farebox top-spenders``, ``farebox reprice`` and ``farebox upsell``: revenue intelligence
(issue [13]), over the admin API (in process with ``--config``, remote with ``--url``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click

from farebox.cli.output import json_option, print_json, print_table
from farebox.cli.tables import show_table
from farebox.cli.target import call_admin, target
from farebox.cli.terminal import is_terminal

MONTH_HELP = "A calendar month in UTC, e.g. 2026-11."


def _show(rows: list[dict[str, Any]], columns: list[str], title: str,
          total: dict[str, Any] | None = None) -> None:  # fmt: skip
    if is_terminal():
        show_table(rows, columns, total=total, title=title)
    else:
        print_table([*rows, total] if total else rows, columns)


@click.command("top-spenders")
@click.option("--month", required=True, help=MONTH_HELP)
@click.option("--top", type=click.IntRange(min=1), default=None, help="The top N (default 10).")
@click.option("--percent", type=click.FloatRange(min=0, min_open=True, max=100), default=None,
              help="The top P percent of the month's tenants instead.")  # fmt: skip
@json_option
@target
def top_spenders(
    month: str, top: int | None, percent: float | None, as_json: bool, config: str | None,
    url: str | None,
) -> None:  # fmt: skip
    """The month's top tenants by revenue (plan fee plus usage) and by cost, with shares."""
    query = {"month": month, "top": top, "percent": percent}
    report = call_admin(config, url, "GET", "/admin/v1/top-spenders?" + urlencode(
        {k: v for k, v in query.items() if v is not None}))  # fmt: skip
    if as_json:
        print_json(report)
        return
    for by in ("revenue", "cost"):
        ranked = report[f"by_{by}"]
        columns = ["rank", "tenant", "plan", "amount_usd", "share_percent", "revenue_usd",
                   "cost_usd", "margin_usd"]  # fmt: skip
        total = {"rank": "TOTAL", "amount_usd": ranked["total_usd"], "share_percent": "100.00"}
        title = f"Top {report['top']} of {ranked['tenants']} by {by}, {month} (UTC)"
        _show(ranked["data"], columns, title, total)


@click.command()
@click.option("--month", required=True, help=MONTH_HELP)
@click.option("--plan", required=True, help="The plan whose tenants are repriced.")
@click.option("--markup", default=None, help='A markup on provider cost, e.g. "3.5".')
@click.option("--resale-input", default=None, help="USD per 1M input tokens (resale).")
@click.option("--resale-output", default=None, help="USD per 1M output tokens (resale).")
@click.option("--per-request", default=None, help="USD per served request.")
@click.option("--monthly-fee", default=None, help="A new monthly fee in USD (default: the plan's).")
@json_option
@target
def reprice(
    month: str, plan: str, markup: str | None, resale_input: str | None,
    resale_output: str | None, per_request: str | None, monthly_fee: str | None, as_json: bool,
    config: str | None, url: str | None,
) -> None:  # fmt: skip
    """What if PLAN had another price: its tenants' month replayed, revenue and margin before
    and after. Nothing is changed."""
    body: dict[str, Any] = {"month": month, "plan": plan, "markup": markup,
                            "per_request": per_request, "monthly_fee_usd": monthly_fee}  # fmt: skip
    if resale_input is not None or resale_output is not None:
        body["resale"] = {"input": resale_input or "0", "output": resale_output or "0"}
    body = {k: v for k, v in body.items() if v is not None}
    report = call_admin(config, url, "POST", "/admin/v1/reprice", body)
    if as_json:
        print_json(report)
        return
    columns = ["tenant", "requests", "cost_usd", "revenue_before_usd", "revenue_after_usd",
               "margin_before_usd", "margin_after_usd", "margin_before_percent",
               "margin_after_percent"]  # fmt: skip
    total = {"tenant": "TOTAL", **report["total"]}
    proposed = ", ".join(f"{k}={v}" for k, v in report["proposed"].items())
    _show(report["data"], columns, f"What if {plan} had {proposed}, {month} (UTC)", total)


@click.command()
@click.option("--month", required=True, help=MONTH_HELP)
@click.option("--window-days", type=click.IntRange(1, 366), default=14, show_default=True,
              help="Days after a refusal in which an upgrade or top-up converts it.")  # fmt: skip
@json_option
@target
def upsell(
    month: str, window_days: int, as_json: bool, config: str | None, url: str | None
) -> None:
    """Budget and credit refusals (upsell moments), and the refused tenants who upgraded or
    topped up within the window, per plan and per budget."""
    query = urlencode({"month": month, "window_days": window_days})
    report = call_admin(config, url, "GET", "/admin/v1/upsell?" + query)
    if as_json:
        print_json(report)
        return
    columns = ["moments", "tenants_refused", "tenants_converted", "conversion_rate_percent",
               "converted_revenue_usd"]  # fmt: skip
    total = {"plan": "TOTAL", "kind": "TOTAL", **report["total"]}
    _show(report["by_plan"], ["plan", *columns], f"Upsell by plan, {month} (UTC)", total)
    _show(report["by_budget"], ["kind", "budget", *columns], f"Upsell by budget, {month} (UTC)")
