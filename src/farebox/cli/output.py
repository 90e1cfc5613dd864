"""How CLI commands print what they got back: tables, the admin API's JSON (``--json``), and
errors as one readable line."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Unpack

import click

from farebox.cli.tables import TableOptions, show_table
from farebox.cli.terminal import is_terminal
from farebox.core.periods import iso_utc
from farebox.errors import FareboxError

F = TypeVar("F", bound=Callable[..., Any])
SNIPPET = 200  # characters of a body that is not the error format


def json_option(fn: F) -> F:
    """``--json``: print the admin API's JSON instead of the table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the admin API's JSON instead of a table."
    )(fn)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], **options: Unpack[TableOptions]
) -> None:
    """The rows as a table: a rich one on a terminal (``cli.tables``), with ``total`` as its
    last row, the ``title`` and the ``caption``; else the plain one scripts parse (the rows
    only, columns padded to their widest cell)."""
    if is_terminal():
        show_table(rows, columns, **options)
        return
    plain_table(rows, columns)


def plain_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    cells = [{c: "" if r.get(c) is None else str(r[c]) for c in columns} for r in rows]
    widths = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in cells:
        click.echo("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())


def print_listing(
    result: dict[str, Any], columns: Sequence[str], as_json: bool, **people: Unpack[TableOptions]
) -> None:
    """A listing answer ``{"object": "list", "data": [...]}``: its JSON, or its rows
    (``people``: ``print_table``'s total, numbers, title and caption, for a terminal)."""
    if as_json:
        print_json(result)
    else:
        print_table(result["data"], columns, **people)


def print_record(record: dict[str, Any], as_json: bool) -> None:
    """One object: its JSON, or a field/value table (nested values as compact JSON)."""
    if as_json:
        print_json(record)
        return
    rows = [{"field": name, "value": _cell(name, value)} for name, value in record.items()]
    print_table(rows, ["field", "value"])


def iso(ts: float | None) -> str | None:
    """Unix seconds as the API's ISO form (UTC), for tables."""
    return None if ts is None else iso_utc(ts)


def _cell(name: str, value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if name.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return iso(value)
    return value


def error_line(status: int, body: bytes | str) -> str:
    """An admin API error as one line, ``404 tenant_not_found: Tenant 'x' not found.``:
    the error format's code and message, or the start of a body in another format."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code") or error.get("type")
        prefix = f"{status} {code}" if code else str(status)
        return f"{prefix}: {one_line(error['message'])}"
    snippet = one_line(text)[:SNIPPET]
    return f"{status}: {snippet or '(empty body)'}"


def farebox_error_line(exc: FareboxError) -> str:
    """An error raised in this process, in the same form as one the admin API answered."""
    code = exc.error_code or exc.type
    return f"{exc.status} {code}: {one_line(exc.message)}"


def one_line(text: str) -> str:
    return " ".join(text.split())
