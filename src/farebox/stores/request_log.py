"""What every store's request log shares (``ReportStore.requests``): the opaque cursor, what a
metadata tag is, the filter as a predicate (the memory store) and as SQL (SQLite and
PostgreSQL), and the page cut from the rows read.

Order: newest first, by ``(started_at, request_id)`` descending (request ids compare by code
point, as SQLite's BINARY and PostgreSQL's "C" collation do). The cursor is the position of
the last entry of a page: the next page starts strictly after it (keyset pagination, so a
page never repeats or skips an entry however many are written meanwhile).

A tag is one top-level metadata member whose value is a string, an integer or a boolean; its
text is the string itself, the integer in decimal, or ``true``/``false``. Other values (floats,
null, objects, arrays) are not tags: they are kept in the entry, never matched. The SQL stores
keep tags in ``ledger_tags`` (one row per tag of an entry that has metadata, written by a
trigger in the ledger's own transaction), indexed by tag then tenant and time.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any

import orjson

from farebox.core.records import LedgerEntry, RequestPage, RequestQuery
from farebox.errors import InvalidRequest
from farebox.stores.sql import LEDGER_COLS, Dialect

CURSOR_VERSION = 1
MAX_CURSOR_LEN = 2048
# the filters that compare a ledger column with a value, by the query's field
COLUMN_FILTERS = (
    ("tenant_id", "tenant_id"),
    ("status", "status"),
    ("key_id", "key_id"),
    ("user", "user"),
    ("feature", "feature"),
    ("model", "model_served"),
    ("cache", "cache"),
)


# the status of most entries, which the status indexes leave out (no index write on the hot
# path of a served request): a filter on it walks the time index, where nearly all rows match
COMMON_STATUS = "ok"
# a tag's name and text are at most this long (longer values stay in the entry, unindexed)
MAX_TAG_CHARS = 64


def encode_cursor(entry: LedgerEntry) -> str:
    raw = orjson.dumps([CURSOR_VERSION, entry.started_at, entry.request_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The ``(started_at, request_id)`` a cursor stands for; anything that is not a cursor
    this module wrote is ``InvalidRequest`` naming ``cursor``."""
    bad = InvalidRequest(
        "'cursor' is not a next_cursor of this list (pass the value a page returned, as is).",
        param="cursor",
    )
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LEN:
        raise bad
    try:
        padded = cursor.encode("ascii") + b"=" * (-len(cursor) % 4)
        value = orjson.loads(base64.b64decode(padded, altchars=b"-_", validate=True))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise bad from None
    if not (isinstance(value, list) and len(value) == 3 and value[0] == CURSOR_VERSION):
        raise bad
    _, started, request_id = value
    if isinstance(started, bool) or not isinstance(started, int | float):
        raise bad
    if not isinstance(request_id, str) or not math.isfinite(started):
        raise bad
    return float(started), request_id


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidRequest(f"'limit' must be a positive integer (got {limit!r}).", param="limit")
    return limit


def check_query(query: RequestQuery) -> int:
    """The page size, once every filter is one the stores can all compare: no filter text
    holds U+0000 (PostgreSQL text cannot, and the ledger drops it), no time is NaN or
    infinite."""
    texts = [(field, getattr(query, field)) for field, _ in COLUMN_FILTERS]
    if query.tag is not None:
        texts += [("tag", query.tag[0]), ("tag", query.tag[1])]
    for field, value in texts:
        if value is not None and "\x00" in value:
            raise InvalidRequest(f"'{field}' may not contain U+0000.", param=field)
    for field, moment in (("start", query.start), ("end", query.end)):
        if moment is not None and not math.isfinite(moment):
            raise InvalidRequest(f"'{field}' must be a finite time.", param=field)
    return check_limit(query.limit)


def tag_text(value: Any) -> str | None:
    """A metadata value's text as a tag, or None when it is not a tag (not a string, an
    integer or a boolean, or longer than ``MAX_TAG_CHARS``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str) and len(text := str(value)) <= MAX_TAG_CHARS:
        return text
    return None


def selects(entry: LedgerEntry, query: RequestQuery) -> bool:
    """Whether ``query``'s filters (not its cursor) select ``entry``."""
    for field, col in COLUMN_FILTERS:
        wanted = getattr(query, field)
        if wanted is not None and getattr(entry, col) != wanted:
            return False
    if query.start is not None and entry.started_at < query.start:
        return False
    if query.end is not None and entry.started_at >= query.end:
        return False
    if query.tag is not None:
        name, value = query.tag
        metadata = entry.metadata or {}
        if len(name) > MAX_TAG_CHARS or name not in metadata or tag_text(metadata[name]) != value:
            return False
    return True


def page_of(rows: Sequence[LedgerEntry], limit: int) -> RequestPage:
    """The page from up to ``limit + 1`` entries read in order: one more than the page means
    there are older ones."""
    entries = list(rows[:limit])
    more = len(rows) > limit and entries
    return RequestPage(entries, encode_cursor(entries[-1]) if more else None)


def memory_page(ledger: Sequence[LedgerEntry], query: RequestQuery) -> RequestPage:
    """The page, from every entry of an in-memory ledger."""
    limit = check_query(query)
    after = decode_cursor(query.cursor) if query.cursor is not None else None
    found = [
        e
        for e in ledger
        if selects(e, query) and (after is None or (e.started_at, e.request_id) < after)
    ]
    found.sort(key=lambda e: (e.started_at, e.request_id), reverse=True)
    return page_of(found[: limit + 1], limit)


def page_statement(dialect: Dialect, schema: str, query: RequestQuery) -> tuple[str, list[Any]]:
    """The SELECT of one page (``limit + 1`` rows, ``LEDGER_COLS`` in order) and its
    parameters. ``schema``: the tables' prefix (``""``, or a quoted schema and a dot). With a
    tag, the walk is over ``ledger_tags``'s index, in order, each row joined to its entry."""
    limit = check_query(query)
    after = decode_cursor(query.cursor) if query.cursor is not None else None
    params: list[Any] = []

    def mark(value: Any) -> str:
        params.append(value)
        return dialect.mark(len(params))

    cols = ", ".join(f'l."{c}"' for c in LEDGER_COLS)
    walk = "t" if query.tag is not None else "l"  # whose time and id the order follows
    where: list[str] = []
    if query.tag is not None:
        source = f"{schema}ledger_tags t CROSS JOIN {schema}ledger l"
        where += ["l.request_id = t.request_id", f"t.name = {mark(query.tag[0])}",
                  f"t.value = {mark(query.tag[1])}"]  # fmt: skip
        if query.tenant_id is not None:
            where.append(f"t.tenant_id = {mark(query.tenant_id)}")
    else:
        source = f"{schema}ledger l"
    for field, col in COLUMN_FILTERS:
        value = getattr(query, field)
        if value is not None:
            where.append(f'l."{col}" = {mark(value)}')
    if query.status is not None and query.status != COMMON_STATUS:
        where.append(f"l.status <> '{COMMON_STATUS}'")  # lets the status indexes serve it
    if query.start is not None:
        where.append(f"{walk}.started_at >= {mark(query.start)}")
    if query.end is not None:
        where.append(f"{walk}.started_at < {mark(query.end)}")
    if after is not None:
        position = f"({mark(after[0])}, {mark(after[1])})"
        where.append(f"({walk}.started_at, {walk}.request_id) < {position}")
    sql = (
        f"SELECT {cols} FROM {source} WHERE {' AND '.join(where) or dialect.true} "
        f"ORDER BY {walk}.started_at DESC, {walk}.request_id DESC LIMIT {mark(limit + 1)}"
    )
    return sql, params
