"""The ``farebox`` command: the root group, with one module per command group beside it."""

from __future__ import annotations

import os
import sys

import click

from farebox.cli.admin_keys import admin_keys
from farebox.cli.anomaly import register as register_anomaly
from farebox.cli.audit import audit
from farebox.cli.billing import export_cmd, margins, profitability, reconcile
from farebox.cli.budgets import budgets
from farebox.cli.cache import cache
from farebox.cli.credits import credits
from farebox.cli.demo import demo
from farebox.cli.guard import guard
from farebox.cli.integrations import integrations
from farebox.cli.invoice import invoice
from farebox.cli.keys import keys
from farebox.cli.requests import requests_cmd
from farebox.cli.revenue import reprice, top_spenders, upsell
from farebox.cli.serve import serve
from farebox.cli.tenants import tenants
from farebox.cli.usage import usage
from farebox.cli.workspaces import workspaces

BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@click.group()
@click.version_option(package_name="farebox")
def main() -> None:
    """Farebox: a multi-tenant AI gateway with hard budgets and exact per-request cost."""
    # numpy (the semantic cache's vector search, loaded later if at all) answers one query at
    # a time: BLAS threads would only contend with the event loop (20 ms vs 1.4 ms per 10k
    # vectors on 2 busy cores). An operator's own setting wins.
    for name in BLAS_THREADS:
        os.environ.setdefault(name, "1")


for command in (serve, demo, tenants, keys, budgets, usage, export_cmd, margins, profitability,
                reconcile, invoice, top_spenders, reprice, upsell,
                requests_cmd, cache, credits, audit, integrations,
                workspaces, admin_keys, guard):  # fmt: skip
    main.add_command(command)
register_anomaly(main, tenants, keys)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
