"""``farebox cache``: the response cache's numbers per tenant (``stats``) and erasing a
tenant's cached answers (``purge``), through the admin API (``/admin/v1/cache``,
``/admin/v1/tenants/{id}/cache``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import click

from farebox.cli.output import json_option, print_json, print_table
from farebox.cli.target import call_admin, target

COLUMNS = ("tenant", "hits", "misses", "hit_rate", "saved_usd", "entries", "bytes")


@click.group()
def cache() -> None:
    """The response cache: hits, hit rate and USD saved per tenant; erase a tenant's entries."""


def _tenant_path(tenant_id: str) -> str:
    return f"/admin/v1/tenants/{quote(tenant_id, safe='')}/cache"


@cache.command("stats")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: every "
              "tenant with cache lookups in the period or entries now).")  # fmt: skip
@click.option("--since", default=None, help="From (unix seconds or ISO; default: this month).")
@click.option("--until", default=None, help="Up to (exclusive; default: the month's end).")
@json_option
@target
def cache_stats(
    tenant_id: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
    config: str | None,
    url: str | None,
) -> None:
    """Entries and bytes each tenant's cache holds now; its hits, misses, hit rate and the
    USD the hits saved over the period (whole UTC hours)."""
    query = urlencode({k: v for k, v in (("since", since), ("until", until)) if v})
    path = _tenant_path(tenant_id) if tenant_id else "/admin/v1/cache"
    answer = call_admin(config, url, "GET", f"{path}?{query}")
    if as_json:
        print_json(answer)
        return
    rows = [answer] if tenant_id else answer["data"]
    period = f"{answer['since']} to {answer['until']}"
    count = f"{len(rows)} tenant{'' if len(rows) == 1 else 's'}"
    print_table([row(r) for r in rows], COLUMNS, title="Response cache", numbers=COLUMNS[1:],
                caption=f"{count}; {period}")  # fmt: skip


def row(stats: dict[str, Any]) -> dict[str, Any]:
    """One tenant's stats as a table row ("-": no lookups; "unavailable": the backend)."""
    held = {k: "unavailable" if stats.get(k) is None else stats[k] for k in ("entries", "bytes")}
    rate = stats.get("hit_rate")
    return {**stats, **held, "hit_rate": "-" if rate is None else rate}


@cache.command("purge")
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose entries to erase.")
@click.option("--namespace", default=None,
              help="Only this namespace (the client's X-Farebox-Cache-Namespace).")  # fmt: skip
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@target
def cache_purge(
    tenant_id: str,
    namespace: str | None,
    yes: bool,
    as_json: bool,
    config: str | None,
    url: str | None,
) -> None:
    """Erase a tenant's cached answers (all, or one namespace's) and say how many."""
    what = f"namespace {namespace!r} of tenant {tenant_id!r}" if namespace else (
        f"every namespace of tenant {tenant_id!r}")  # fmt: skip
    if not yes:
        click.confirm(f"Erase the cached answers of {what}?", abort=True, err=True)
    query = f"?{urlencode({'namespace': namespace})}" if namespace is not None else ""
    answer = call_admin(config, url, "DELETE", _tenant_path(tenant_id) + query)
    if as_json:
        print_json(answer)
        return
    purged = answer["purged"]
    click.echo(f"Erased {purged} cached answer{'' if purged == 1 else 's'} of {what}.")
