"""The ``farebox`` command: the root group, with one module per command group beside it."""

from __future__ import annotations

import sys

import click

from farebox.cli.anomaly import register as register_anomaly
from farebox.cli.billing import export_cmd, margins, reconcile
from farebox.cli.budgets import budgets
from farebox.cli.cache import cache
from farebox.cli.demo import demo
from farebox.cli.keys import keys
from farebox.cli.requests import requests_cmd
from farebox.cli.serve import serve
from farebox.cli.tenants import tenants
from farebox.cli.usage import usage


@click.group()
@click.version_option(package_name="farebox")
def main() -> None:
    """Farebox: a multi-tenant AI gateway with hard budgets and exact per-request cost."""


for command in (serve, demo, tenants, keys, budgets, usage, export_cmd, margins, reconcile,
                requests_cmd, cache):  # fmt: skip
    main.add_command(command)
register_anomaly(main, tenants, keys)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
