"""``farebox credits``: a prepaid tenant's balance and grants (``show``), and granting credits
(``grant``), through the admin API (``/admin/v1/tenants/{id}/credits``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from farebox.cli.output import json_option, print_json, print_table
from farebox.cli.target import call_admin, target

COLUMNS = ("idempotency_key", "kind", "amount", "burned", "remaining", "expired", "expires_at",
           "source")  # fmt: skip


@click.group()
def credits() -> None:
    """Prepaid credits: a tenant's balance and grants; grant top-ups, promotions, refunds."""


def _path(tenant_id: str) -> str:
    return f"/admin/v1/tenants/{quote(tenant_id, safe='')}/credits"


def _show(answer: dict[str, Any]) -> None:
    rows = [{**g, "expires_at": g["expires_at"] or "-"} for g in answer["grants"]]
    caption = (f"balance {answer['balance']} · held {answer['reserved']} · burned "
               f"{answer['burned']} · granted {answer['granted']} · expired {answer['expired']}"
               f" · {answer['per_usd']} credits per USD")  # fmt: skip
    print_table(rows, COLUMNS, title=f"Credits of {answer['tenant']}",
                numbers=("amount", "burned", "remaining", "expired"), caption=caption)  # fmt: skip


@credits.command("show")
@click.argument("tenant_id")
@json_option
@target
def credits_show(tenant_id: str, as_json: bool, config: str | None, url: str | None) -> None:
    """The tenant's balance, credits held in flight, burned, granted and expired, and each
    grant (burned first-to-expire first)."""
    answer = call_admin(config, url, "GET", _path(tenant_id))
    if as_json:
        print_json(answer)
        return
    _show(answer)


@credits.command("grant")
@click.argument("tenant_id")
@click.option("--amount", required=True, help="Credits to grant (a decimal, e.g. 1500).")
@click.option("--key", "idempotency_key", required=True,
              help="Idempotency key: one grant per key (e.g. the payment's id).")  # fmt: skip
@click.option("--kind", type=click.Choice(["top_up", "promo", "refund"]), default="top_up",
              show_default=True, help="A paid top-up, a promotion or a refund.")  # fmt: skip
@click.option("--expires-at", default=None,
              help="When unused credits expire (unix seconds or ISO; default: never).")  # fmt: skip
@click.option("--note", default=None, help="A note kept with the grant.")
@json_option
@target
def credits_grant(tenant_id: str, amount: str, idempotency_key: str, kind: str,
                  expires_at: str | None, note: str | None, as_json: bool, config: str | None,
                  url: str | None) -> None:  # fmt: skip
    """Grant credits to a prepaid tenant, once per idempotency key."""
    body: dict[str, Any] = {"amount": amount, "idempotency_key": idempotency_key, "kind": kind}
    if expires_at is not None:
        body["expires_at"] = expires_at
    if note is not None:
        body["note"] = note
    answer = call_admin(config, url, "POST", _path(tenant_id), body)
    if as_json:
        print_json(answer)
        return
    _show(answer)
