"""A ledger batch in one statement: one round trip and one commit (one WAL flush) however
many entries the batch holds.

The ledger writer (``gateway.ledger.LedgerWriter``) already groups the entries of concurrent
requests into one ``append_ledger`` call while the previous batch commits; this module makes
that call cheap. The entries go as one array per column (``unnest``), typed from the table
itself (read once when the store opens), into one ``INSERT .. ON CONFLICT`` run outside an
explicit transaction: PostgreSQL commits the statement on its own, so there is no ``BEGIN``,
no separate check for entries already written and no ``COMMIT`` round trip. The outbox rows
of the billable entries the statement actually wrote come from its ``RETURNING`` in the same
statement (a data-modifying ``WITH``), so a retried batch writes nothing twice, outbox
included.

The entries usually go as one JSON text (``json_rows``: orjson writes the whole batch in C,
PostgreSQL reads it with ``jsonb_to_recordset`` into the same typed columns): one argument,
not one array per column, whose every element asyncpg would check and encode in Python (20 to
35 us of the gateway's CPU per entry). JSON carries each value exactly (integers as written,
floats in their shortest round-tripping form, text unescaped, metadata as JSON); a batch it
could not carry exactly (a NUL, which jsonb refuses and the arrays path drops; a float that
is not finite, which orjson would write as null; an integer beyond 64 bits, which orjson
refuses; metadata of None, which the arrays path writes as {}) goes as arrays, as before.

A batch may name a request twice (a retry queued behind its first attempt). One statement
cannot touch a row twice, so the batch is folded first to what writing its entries one after
another would leave: the first entry of a request, replaced by a later one only while it is
an ``unsettled`` placeholder (for ``insert_ledger_if_absent``: the first, always).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from farebox.core.records import LedgerEntry
from farebox.stores.sql import LEDGER_COLS

# the ledger's column types, as SQL, read from the catalog when the store opens
COLUMN_TYPES = (
    "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
    "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
)
_ORD = "fbx_position"  # the entry's position in its batch (not a ledger column)
# the float columns, which JSON cannot carry when not finite
_FLOATS = operator.attrgetter(
    *(f.name for f in dataclasses.fields(LedgerEntry) if "float" in str(f.type))
)


def _cols(cols: Sequence[str], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{c}"' for c in cols)


@dataclass(frozen=True, slots=True)
class LedgerStatements:
    """The four statements: replace ``unsettled`` placeholders or only insert, each with
    and without the outbox rows."""

    upsert: str
    upsert_outbox: str
    insert: str
    insert_outbox: str

    @classmethod
    def build(cls, schema: str, types: Mapping[str, str], *, json: bool) -> LedgerStatements:
        """``schema`` is already quoted; ``types`` maps each ledger column to its SQL type.
        ``json``: the entries come as one JSON text (``json_rows``), else one array each."""
        missing = [c for c in LEDGER_COLS if c not in types]
        if missing:
            raise RuntimeError(f"the ledger table of {schema} has no column(s) {missing}")
        if json:
            typed = ", ".join(f'"{c}" {types[c]}' for c in LEDGER_COLS)
            rows = f"ROWS FROM (jsonb_to_recordset($1::text::jsonb) AS ({typed}))"
        else:
            arrays = ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(LEDGER_COLS, start=1))
            rows = f"unnest({arrays})"
        given = f"SELECT * FROM {rows} WITH ORDINALITY AS t({_cols(LEDGER_COLS)}, {_ORD})"
        insert = f"INSERT INTO {schema}.ledger({_cols(LEDGER_COLS)}) "
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in LEDGER_COLS if c != "request_id")
        replace = f"DO UPDATE SET {updates} WHERE ledger.status = 'unsettled'"

        def plain(conflict: str) -> str:
            rows = f"SELECT {_cols(LEDGER_COLS)} FROM ({given}) g"
            return f"{insert}{rows} ON CONFLICT (request_id) {conflict}"

        def with_outbox(conflict: str) -> str:
            return (
                f"WITH given AS ({given}), written AS ("
                f"{insert}SELECT {_cols(LEDGER_COLS)} FROM given ON CONFLICT (request_id) "
                f"{conflict} RETURNING request_id, status) "
                f"INSERT INTO {schema}.outbox(request_id) SELECT w.request_id FROM written w "
                f"JOIN given g ON g.request_id = w.request_id WHERE w.status <> 'unsettled' "
                f"ORDER BY g.{_ORD}"
            )

        return cls(plain(replace), with_outbox(replace), plain("DO NOTHING"),
                   with_outbox("DO NOTHING"))  # fmt: skip

    def pick(self, *, replace_unsettled: bool, outbox: bool) -> str:
        if replace_unsettled:
            return self.upsert_outbox if outbox else self.upsert
        return self.insert_outbox if outbox else self.insert


def folded(entries: Sequence[LedgerEntry], *, replace_unsettled: bool) -> list[LedgerEntry]:
    """One entry per request id, as writing ``entries`` one after another would leave it."""
    kept: dict[str, LedgerEntry] = {}
    for e in entries:
        have = kept.get(e.request_id)
        if have is None or (replace_unsettled and have.status == "unsettled"):
            kept[e.request_id] = e
    return list(kept.values())


def column_arrays(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows (one list of values per entry, in ``LEDGER_COLS`` order) as one list per column."""
    return [list(column) for column in zip(*rows, strict=True)]


def json_rows(entries: Sequence[LedgerEntry]) -> str | None:
    """The entries as one JSON array of objects (one key per ledger column), or None when
    JSON would not carry every value exactly (see the module's docstring)."""
    for e in entries:
        if e.metadata is None:  # the arrays path writes it as {}
            return None
        for value in _FLOATS(e):
            if isinstance(value, float) and not math.isfinite(value):
                return None
    try:
        data = orjson.dumps(entries)
    except TypeError:  # an integer beyond 64 bits (or a value no path can write)
        return None
    if b"\\u0000" in data:
        return None
    return data.decode()
