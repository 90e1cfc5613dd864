"""Records as SQLite rows: JSON and boolean columns encoded and decoded, ledger entries and
their outbox positions written.

Every billable entry gets the next outbox position in its own transaction: the exporter's
cursor then sees entries in commit order, including one that replaces a late placeholder.
Positions are rowids: only old rows are ever pruned, so the next one is always higher.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import orjson

from farebox.core.records import LedgerEntry
from farebox.stores.sql import LEDGER_COLS

_JSON_COLS = {"billing", "metadata", "budgets", "rate_limits", "guardrails"}
_BOOL_COLS = {"paused", "stream", "byok"}
_LEDGER_ROW = attrgetter(*LEDGER_COLS)
_LEDGER_META = LEDGER_COLS.index("metadata")
_LEDGER_GUARD = LEDGER_COLS.index("guardrails")
LEDGER_INSERT = (
    f"INSERT OR IGNORE INTO ledger({','.join(LEDGER_COLS)}) "
    f"VALUES ({','.join('?' * len(LEDGER_COLS))})"
)
OUTBOX_INSERT = "INSERT INTO outbox(request_id) VALUES (?)"


def encode(col: str, value: Any) -> Any:
    if col in _JSON_COLS:
        return orjson.dumps(value).decode()
    if col in _BOOL_COLS:
        return int(bool(value))
    return value


def decode(cols: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col, value in zip(cols, row, strict=True):
        if col in _JSON_COLS:
            out[col] = orjson.loads(value) if value else {}
        elif col in _BOOL_COLS:
            out[col] = bool(value)
        else:
            out[col] = value
    return out


def ledger_row(entry: LedgerEntry) -> list[Any]:
    row = list(_LEDGER_ROW(entry))
    row[_LEDGER_META] = orjson.dumps(row[_LEDGER_META]).decode() if row[_LEDGER_META] else "{}"
    row[_LEDGER_GUARD] = orjson.dumps(row[_LEDGER_GUARD]).decode() if row[_LEDGER_GUARD] else "[]"
    return row


def insert_entries(
    db: sqlite3.Connection, entries: Sequence[LedgerEntry], rows: Sequence[list[Any]], outbox: bool
) -> None:
    """Insert ``rows`` (the entries' ``ledger_row``s; a repeated request id is ignored) and,
    with ``outbox``, the billable entries' outbox positions."""
    db.executemany(LEDGER_INSERT, rows)
    if outbox:
        db.executemany(OUTBOX_INSERT, [(e.request_id,) for e in entries if e.status != "unsettled"])
