"""Guardrail findings as the stores keep them (issue 15): the ``FindingsStore`` role.

Findings live in the ledger's ``guardrails`` column (``core.guardrails.Finding.json``: detector,
category, action, score, where; never the matched text); this role reads them:

- ``page``: the requests that have findings, newest first, filtered by tenant, key, time, and
  by finding (a row matches when ANY of its findings has the detector, category and action
  asked), one keyset page at a time (the cursor of ``stores.request_log``);
- ``counts``: findings (and the requests carrying them) per tenant, detector, category and
  action over a time window (the dashboard);
- ``tally``: the per-subject counter of ``max_findings_per_hour``, atomic across processes and
  replicas: minute cells in the store, added to and summed over the last hour in one
  serialised transaction, so of any number of concurrent tallies exactly one sees the sum
  cross a limit (``before <= limit < after``).

``stores/base.py`` is at its size cap: the role is declared here, and a store has it as its
``findings`` attribute (``findings_of``).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from farebox.errors import InvalidRequest
from farebox.stores.request_log import CURSOR_VERSION, decode_cursor
from farebox.stores.sql import Dialect

FINDING_FIELDS = ("detector", "category", "action", "score", "where")
MINUTE = 60
HOUR = 3600
MAX_LIMIT = 1000
MAX_GROUPS = 5000  # count groups one ``counts`` returns at most
# the ledger columns a findings row reads, in order (``guardrails`` last)
ROW_COLS = ("request_id", "tenant_id", "key_id", "workspace", "user", "model_requested",
            "model_served", "endpoint", "status", "http_status", "started_at",
            "guardrails")  # fmt: skip


@dataclass(frozen=True, slots=True)
class FindingsQuery:
    """Which findings rows: every filter optional; ``start``/``end`` bound the request's
    start as ``[start, end)``; ``detector``/``category``/``action`` select a row when one of
    its findings has all of those given."""

    tenant_id: str | None = None
    key_id: str | None = None
    detector: str | None = None
    category: str | None = None
    action: str | None = None
    start: float | None = None
    end: float | None = None
    cursor: str | None = None
    limit: int = 50

    @property
    def wanted(self) -> dict[str, str]:
        """The finding filters given, as a finding's fields."""
        given = {"detector": self.detector, "category": self.category, "action": self.action}
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True, slots=True)
class FindingRow:
    """One request that has findings (only the ledger's attribution, never content)."""

    request_id: str
    tenant_id: str
    key_id: str
    workspace: str | None
    user: str | None
    model_requested: str
    model_served: str
    endpoint: str
    status: str
    http_status: int
    started_at: float
    findings: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FindingsPage:
    rows: list[FindingRow]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class FindingCount:
    """Findings of one (tenant, detector, category, action) in a window, and the requests
    that carried them."""

    tenant_id: str
    detector: str
    category: str
    action: str
    findings: int
    requests: int


class FindingsStore(Protocol):
    async def page(self, query: FindingsQuery) -> FindingsPage:
        """One page of the rows ``query`` selects, newest first by (started_at, request_id);
        ``next_cursor`` is set when older rows remain. A bad cursor or filter is
        ``InvalidRequest``."""
        ...

    async def counts(self, tenant_id: str | None, start: float, end: float) -> list[FindingCount]:
        """Findings per tenant, detector, category and action of the requests started in
        ``[start, end)`` (one tenant's, or every tenant's), by tenant then most findings."""
        ...

    async def tally(self, subject: str, at: float, findings: int) -> tuple[int, int]:
        """Add ``findings`` at ``at`` to ``subject``'s counter and return its sum over the hour
        ending at ``at`` before and after the addition, atomically against every other tally
        of that subject (any process or replica)."""
        ...

    async def prune(self, before: float) -> None:
        """Forget the tally cells older than ``before``."""
        ...


class HasFindings(Protocol):
    @property
    def findings(self) -> FindingsStore: ...


def findings_of(store: object) -> FindingsStore | None:
    """``store``'s findings role (every store of the project has one; a test double may not)."""
    role = getattr(store, "findings", None)
    return role if role is not None and hasattr(role, "page") else None


# what every implementation shares ---------------------------------------------------------
def clean(findings: Any) -> list[dict[str, Any]]:
    """A ledger entry's findings with only the fields a finding has (whatever else an entry
    held is never shown, counted or sent)."""
    if not isinstance(findings, list):
        return []
    out = []
    for f in findings:
        if isinstance(f, dict):
            out.append({k: f.get(k) for k in FINDING_FIELDS})
    return out


def minute_of(at: float) -> int:
    return int(at) // MINUTE * MINUTE


def window_floor(at: float) -> int:
    """The first minute cell the hour ending at ``at`` counts (60 cells, ``at``'s included)."""
    return minute_of(at) - HOUR + MINUTE


def check(query: FindingsQuery) -> int:
    """The page size, once every filter is one every store compares alike."""
    limit = query.limit
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    texts = ("tenant_id", "key_id", "detector", "category", "action")
    for name in texts:
        value = getattr(query, name)
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            raise InvalidRequest(f"'{name}' may not contain U+0000.", param=name)
    for name in ("start", "end"):
        moment = getattr(query, name)
        if moment is not None and not math.isfinite(moment):
            raise InvalidRequest(f"'{name}' must be a finite time.", param=name)
    return limit


def after_of(query: FindingsQuery) -> tuple[float, str] | None:
    return decode_cursor(query.cursor) if query.cursor is not None else None


def page_statement(
    query: FindingsQuery,
    dialect: Dialect,
    source: str,
    has_findings: str,
    finding_filter: Callable[[dict[str, str], Callable[[Any], str]], str],
) -> tuple[str, list[Any]]:
    """The SELECT of one page (``limit + 1`` rows, ``ROW_COLS``) and its parameters, as both
    SQL stores write it: ``source`` is the ledger aliased ``l``, ``has_findings`` the clause
    of the rows with findings, ``finding_filter(wanted, mark)`` the clause of ``wanted``."""
    limit = check(query)
    after = after_of(query)  # a bad cursor fails here, unread
    params: list[Any] = []

    def mark(value: Any) -> str:
        params.append(value)
        return dialect.mark(len(params))

    where = [has_findings]
    for col, value in (("tenant_id", query.tenant_id), ("key_id", query.key_id)):
        if value is not None:
            where.append(f"l.{col} = {mark(value)}")
    if query.start is not None:
        where.append(f"l.started_at >= {mark(query.start)}")
    if query.end is not None:
        where.append(f"l.started_at < {mark(query.end)}")
    if after is not None:
        where.append(f"(l.started_at, l.request_id) < ({mark(after[0])}, {mark(after[1])})")
    if query.wanted:
        where.append(finding_filter(query.wanted, mark))
    cols = ", ".join(f'l."{c}"' for c in ROW_COLS)
    sql = (
        f"SELECT {cols} FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY l.started_at DESC, l.request_id DESC LIMIT {mark(limit + 1)}"
    )
    return sql, params


def cursor_of(row: FindingRow) -> str:
    raw = orjson.dumps([CURSOR_VERSION, row.started_at, row.request_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def row_of(values: Sequence[Any]) -> FindingRow:
    """A row read in ``ROW_COLS`` order (``guardrails`` as a list or as JSON text)."""
    *head, guard = values
    found = orjson.loads(guard) if isinstance(guard, str | bytes) else guard
    (request_id, tenant_id, key_id, workspace, user, model_requested, model_served,
     endpoint, status, http_status, started_at) = head  # fmt: skip
    return FindingRow(str(request_id), str(tenant_id), str(key_id), workspace, user,
                      str(model_requested), str(model_served), str(endpoint), str(status),
                      int(http_status), float(started_at), clean(found))  # fmt: skip


def page_of(rows: Sequence[FindingRow], limit: int) -> FindingsPage:
    """The page from up to ``limit + 1`` rows read in order."""
    kept = list(rows[:limit])
    more = len(rows) > limit and kept
    return FindingsPage(kept, cursor_of(kept[-1]) if more else None)


def selects(row: FindingRow, query: FindingsQuery) -> bool:
    """Whether ``query``'s filters (not its cursor) select ``row`` (the memory store's)."""
    for name, value in (("tenant_id", query.tenant_id), ("key_id", query.key_id)):
        if value is not None and getattr(row, name) != value:
            return False
    if query.start is not None and row.started_at < query.start:
        return False
    if query.end is not None and row.started_at >= query.end:
        return False
    wanted = query.wanted
    if not row.findings:
        return False
    return not wanted or any(all(f.get(k) == v for k, v in wanted.items()) for f in row.findings)


def count_rows(rows: Iterable[FindingRow]) -> list[FindingCount]:
    """``counts`` over rows in memory: findings and distinct requests per group."""
    findings: dict[tuple[str, str, str, str], int] = {}
    requests: dict[tuple[str, str, str, str], set[str]] = {}
    for row in rows:
        for f in row.findings:
            group = (row.tenant_id, str(f.get("detector") or ""), str(f.get("category") or ""),
                     str(f.get("action") or ""))  # fmt: skip
            findings[group] = findings.get(group, 0) + 1
            requests.setdefault(group, set()).add(row.request_id)
    return ordered([FindingCount(*g, n, len(requests[g])) for g, n in findings.items()])


def ordered(counts: Iterable[FindingCount]) -> list[FindingCount]:
    """By tenant, then most findings, then detector, category and action."""
    return sorted(counts, key=lambda c: (c.tenant_id, -c.findings, c.detector, c.category,
                                         c.action))[:MAX_GROUPS]  # fmt: skip
