"""Tables for people: how every CLI command's rows look on a terminal (``rich``).

Numbers are right-aligned with their digits grouped (``1,234``); money stays the exact
decimal string the API gave (``2,098.225166215``), never a float. A totals row, when the
command has totals, closes the table. ``column_totals`` adds columns up exactly (integers,
and money as integer pico-USD). Off a terminal, ``cli.output`` prints its plain tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypedDict, Unpack

from rich import box
from rich.table import Table
from rich.text import Text

from farebox.cli.terminal import console
from farebox.core.money import format_usd, parse_usd

DECIMAL = re.compile(r"-?\d+(\.\d+)?")
NUMBER_NAMES = frozenset({"requests", "ledger", "delivered", "dead", "pending", "entries",
                          "events", "served", "rate_limited", "over_budget", "failed"})  # fmt: skip
NUMBER_SUFFIXES = ("_usd", "_tokens", "_percent", "_per_hour", "_ms")
ALERTS = {"matched": False, "paused": True, "revoked": True}  # a cell worth a colour


class TableOptions(TypedDict, total=False):
    """``rich_table``'s options, as its callers pass them on."""

    numbers: Collection[str]
    total: Mapping[str, Any] | None
    title: str | None
    caption: str | None


def is_number_column(name: str) -> bool:
    return name in NUMBER_NAMES or name.endswith(NUMBER_SUFFIXES)


def group_digits(text: str) -> str:
    """``2098.225166215`` -> ``2,098.225166215``: the same exact value, easier to read."""
    if not DECIMAL.fullmatch(text):
        return text
    sign, rest = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, dot, frac = rest.partition(".")
    return f"{sign}{int(whole):,}{dot}{frac}"


def cell(name: str, value: Any, number: bool) -> Text:
    """One cell as a person reads it."""
    if value is None:
        return Text("")
    if isinstance(value, bool):
        style = "bold red" if ALERTS.get(name) is value else ""
        return Text("yes" if value else "no", style=style)
    if isinstance(value, dict | list):
        return Text(json.dumps(value, separators=(",", ":")))
    text = str(value)
    return Text(group_digits(text) if number else text)


def rich_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    numbers: Collection[str] = (),
    total: Mapping[str, Any] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """The rows as a rich table: numbers right-aligned, ``total`` as a last, bold row."""
    numeric = {c for c in columns if c in numbers or is_number_column(c)}
    caption = caption or (None if rows else "none")
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_footer=False,
                  title_justify="left", caption_justify="left")  # fmt: skip
    shown = [*rows, *([total] if total is not None else [])]
    for name in columns:
        widest = max([len(name)] + [len(cell(name, r.get(name), True)) for r in shown])
        if name in numeric:
            table.add_column(name, justify="right", no_wrap=True, min_width=widest)
        else:
            table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(cell(c, row.get(c), c in numeric) for c in columns))
    if total is not None:
        table.add_section()
        table.add_row(*(cell(c, total.get(c), c in numeric) for c in columns), style="bold")
    return table


def show_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], **options: Unpack[TableOptions]
) -> None:
    """Print ``rich_table`` on stdout."""
    console().print(rich_table(rows, columns, **options))


def column_totals(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], label: tuple[str, str]
) -> dict[str, Any]:
    """The sum of each of ``columns`` over ``rows``, exactly: integers as integers, money
    (``*_usd`` decimal strings) through pico-USD. ``label`` is (column, text), e.g.
    ("tenant", "TOTAL")."""
    total: dict[str, Any] = {label[0]: label[1]}
    for name in columns:
        values: list[Any] = [r[name] for r in rows if r.get(name) is not None]
        if name.endswith("_usd"):
            total[name] = format_usd(sum(parse_usd(v, field=name) for v in values))
        else:
            total[name] = sum(int(v) for v in values)
    return total
