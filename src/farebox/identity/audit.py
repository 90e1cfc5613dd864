"""The audit trail (issue [14]): secrets masked, records hash-chained, the chain verified.

A record's hash is SHA-256 over the previous record's hash, a newline, and the record's
canonical JSON (every field but ``hash``, keys sorted, orjson): so editing a row changes its
hash, and deleting or inserting one breaks the ``prev_hash`` link or the ``seq`` count of the
row after it. ``verify`` walks a chain and names the first row that is wrong and why.

Masking happens before a change is hashed and stored: a field named like a secret (``key``,
``secret``, ``token``, ``password``, ``api_key``, ``authorization``, or ending in ``_key``,
``_secret``, ``_token``, ``_password``) and any string that starts with a Farebox key prefix
(``fbx_``, ``fbs_``, ``fba_``; longer than a listing's display prefix) keeps only ``***`` and
its last 4 characters (nothing of a value shorter than 12).

The record's own text fields (actor, role, action, target, ip, request id, outcome) come
partly from the request (a path, a header): a control character in them (U+0000, which
PostgreSQL's ``TEXT`` refuses, and any other C0/C1 one) is written as ``\\uXXXX`` before the
record is sealed, so that no request can make its own record unstorable (``plain``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from farebox.core.audit import GENESIS, AuditEntry, AuditQuery, AuditRecord
from farebox.core.keys import ADMIN_PREFIX, SERVICE_PREFIX, TENANT_PREFIX
from farebox.stores.base import AuditStore

SECRET_NAMES = frozenset({"key", "secret", "token", "password", "passwd", "api_key", "apikey",
                          "authorization", "credential", "credentials"})  # fmt: skip
SECRET_SUFFIXES = ("_key", "_secret", "_token", "_password")
KEY_PREFIXES = (TENANT_PREFIX, SERVICE_PREFIX, ADMIN_PREFIX)
DISPLAY_PREFIX = 10  # a listing's non-secret key prefix (core.keys.display_prefix)
MAX_INT = 2**63 - 1
PAGE = 1000  # records per page when a whole chain is read
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # what plain() escapes


def plain(text: str) -> str:
    """``text`` with each control character written as ``\\uXXXX`` (a NUL would make the row
    unstorable in PostgreSQL; the others would garble a terminal reading the log)."""
    return CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def secret_name(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return lowered in SECRET_NAMES or lowered.endswith(SECRET_SUFFIXES)


def masked(value: Any) -> str:
    """``***`` and at most the last 4 characters of a secret (none of a short one)."""
    text = value if isinstance(value, str) else ""
    if text.startswith("***") and len(text) <= 7:  # masked already
        return text
    return "***" + (text[-4:] if len(text) >= 12 else "")


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIXES) and len(value) > DISPLAY_PREFIX


def mask(value: Any) -> Any:
    """``value`` (decoded JSON) with secrets masked and made canonical-JSON safe: integers
    beyond 64 bits become strings, NaN and infinities null, keys strings."""
    if isinstance(value, Mapping):
        return {
            str(k): (masked(v) if v is not None and secret_name(str(k)) else mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return masked(value) if looks_like_key(value) else value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -MAX_INT - 1 <= value <= MAX_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def body_json(data: bytes, limit: int) -> Any:
    """A request or response body as masked JSON: ``None`` when empty, a note when it is
    larger than ``limit`` bytes or not JSON (never the raw bytes)."""
    if not data:
        return None
    if len(data) > limit:
        return {"truncated": True, "bytes": len(data)}
    try:
        return mask(orjson.loads(data))
    except orjson.JSONDecodeError:
        return {"not_json": True, "bytes": len(data)}


def canonical(record: AuditRecord) -> bytes:
    """The record's fields but ``hash``, as JSON with sorted keys: what its hash covers."""
    fields = asdict(record)
    del fields["hash"]
    fields["change"] = dict(record.change)
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def chain_hash(record: AuditRecord) -> str:
    return hashlib.sha256(record.prev_hash.encode() + b"\n" + canonical(record)).hexdigest()


def seal(entry: AuditEntry, seq: int, prev_hash: str, at: float) -> AuditRecord:
    """``entry`` as record ``seq`` of the chain, after the record whose hash is ``prev_hash``."""
    draft = AuditRecord(seq, at, plain(entry.actor), plain(entry.role), plain(entry.action),
                        plain(entry.target), mask(dict(entry.change)), plain(entry.ip),
                        plain(entry.request_id), plain(entry.outcome), entry.status, prev_hash,
                        "")  # fmt: skip
    return AuditRecord(**{**asdict(draft), "change": draft.change, "hash": chain_hash(draft)})


@dataclass(frozen=True, slots=True)
class Break:
    """Where a chain is wrong: the first bad ``seq``, and what is wrong with it."""

    seq: int
    reason: str


class Walk:
    """``verify`` one page at a time: the state carried from a page to the next."""

    def __init__(self) -> None:
        self.seq = 0
        self.hash = GENESIS

    def step(self, record: AuditRecord) -> Break | None:
        expected = self.seq + 1
        if record.seq > expected:
            return Break(expected, f"missing: the next record is seq {record.seq} (deleted?)")
        if record.seq < expected:
            return Break(expected, f"seq {record.seq} found where {expected} was expected")
        if record.prev_hash != self.hash:
            why = "the record before it was deleted, inserted or rewritten"
            return Break(record.seq, f"prev_hash does not match seq {self.seq}'s hash ({why})")
        if chain_hash(record) != record.hash:
            return Break(record.seq, "hash mismatch: the record was edited")
        self.seq, self.hash = record.seq, record.hash
        return None


def verify(records: Iterable[AuditRecord]) -> Break | None:
    """The first break in ``records`` (oldest first, from seq 1), or None: the chain holds."""
    walk = Walk()
    for record in records:
        found = walk.step(record)
        if found is not None:
            return found
    return None


def record_json(record: AuditRecord) -> dict[str, Any]:
    return {**asdict(record), "change": dict(record.change)}


def record_of(data: Mapping[str, Any]) -> AuditRecord:
    """A record from ``record_json`` (the admin API's answer): what ``farebox audit verify``
    checks through the API."""
    return AuditRecord(int(data["seq"]), float(data["at"]), str(data["actor"]),
                       str(data["role"]), str(data["action"]), str(data["target"]),
                       dict(data["change"]), str(data["ip"]), str(data["request_id"]),
                       str(data["outcome"]), int(data["status"]), str(data["prev_hash"]),
                       str(data["hash"]))  # fmt: skip


class AuditLog:
    """Appends entries to the store's chain (time from ``clock``), and reads it back.
    ``on_record``: called with each record's JSON once it is stored (the webhook stream);
    it must not block."""

    def __init__(
        self,
        store: AuditStore,
        clock: Callable[[], float],
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_record = on_record

    async def record(self, entry: AuditEntry) -> AuditRecord:
        clock = self.clock
        stored = await self.store.append(lambda seq, prev: seal(entry, seq, prev, clock()))
        if self.on_record is not None:
            self.on_record(record_json(stored))
        return stored

    async def page(self, query: AuditQuery) -> list[AuditRecord]:
        return await self.store.query(query)

    async def verify(self) -> tuple[int, Break | None]:
        """The number of records read, and the first break (None: the chain holds)."""
        walk, count = Walk(), 0
        while True:
            page = await self.store.scan(walk.seq, PAGE)
            for record in page:
                count += 1
                found = walk.step(record)
                if found is not None:
                    return count, found
            if len(page) < PAGE:
                return count, None
