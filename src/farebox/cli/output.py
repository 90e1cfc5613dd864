"""How CLI commands print what they got back."""

from __future__ import annotations

from typing import Any

import click


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [{c: "" if r.get(c) is None else str(r[c]) for c in columns} for r in rows]
    widths = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in cells:
        click.echo("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
