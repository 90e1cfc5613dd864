"""The audit trail's records (issue [14]), pure: who changed what, when, and a hash chain.

Each ``AuditRecord`` holds the hash of the one before it (``prev_hash``; the first holds
``GENESIS``), so an edited, deleted or inserted row breaks the chain where it happened. The
hashing itself (canonical JSON, SHA-256) and the check of a chain are in
``farebox.identity.audit``; the stores keep records and append them one at a time, atomically
(``farebox.stores.base.AuditStore``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64  # the prev_hash of the first record
OUTCOMES = ("ok", "refused", "failed")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened, before it is given its place in the chain (seq, time, hashes).

    ``actor``: an admin key's id, ``env`` (the ``FAREBOX_ADMIN_KEY``), ``cli:<os user>``, or
    ``anonymous`` (no valid admin key); ``action``: ``METHOD /path/{template}`` (under
    ``/admin/v1``); ``target``: ``kind:id`` (``tenant:acme``, ``key:key_..``), or empty;
    ``change``: ``{"before", "after", "request"}`` with secrets masked; ``outcome``: ``ok``,
    ``refused`` (401, 403, or a ``tenant_admin``'s 404) or ``failed`` (any other error)."""

    actor: str
    role: str
    action: str
    target: str
    change: Mapping[str, Any]
    ip: str
    request_id: str
    outcome: str
    status: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of the audit log: ``seq`` counts from 1 with no gaps; ``at`` is unix seconds."""

    seq: int
    at: float
    actor: str
    role: str
    action: str
    target: str
    change: Mapping[str, Any]
    ip: str
    request_id: str
    outcome: str
    status: int
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """A page of the audit log. Filters are exact matches; ``start`` and ``end`` bound
    ``at`` as ``[start, end)``. ``descending``: newest first, and ``cursor``
    is then the seq to stay below (else: to stay above)."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    start: float | None = None
    end: float | None = None
    limit: int = 100
    cursor: int | None = None
    descending: bool = True


def matches(record: AuditRecord, query: AuditQuery) -> bool:
    """Whether ``record`` passes the query's filters (not its cursor or limit)."""
    return (
        (query.actor is None or record.actor == query.actor)
        and (query.action is None or record.action == query.action)
        and (query.target is None or record.target == query.target)
        and (query.start is None or record.at >= query.start)
        and (query.end is None or record.at < query.end)
    )


def after_cursor(record: AuditRecord, query: AuditQuery) -> bool:
    if query.cursor is None:
        return True
    return record.seq < query.cursor if query.descending else record.seq > query.cursor
