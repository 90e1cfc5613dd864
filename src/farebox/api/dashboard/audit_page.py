"""The dashboard's audit page, ``/dashboard/audit``: the audit log newest first, filtered by
actor, action and target (exact, as ``GET /admin/v1/audit``), a page at a time, under a banner
saying whether the hash chain holds.

Owners only, as the admin API's ``GET /audit`` (``need="owner"``): any other session gets the
404 of a page that does not exist. The chain check is bounded: a log of at most
``VERIFY_MAX`` records is verified whole from its first record; a longer one over its last
``VERIFY_MAX`` (anchored on the hash of the record before them), and the banner says so
(``farebox audit verify`` checks the whole chain).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from farebox.api.dashboard.access import session_actor
from farebox.api.dashboard.pages import secure
from farebox.api.dashboard.routes import DashboardRoutes
from farebox.core.audit import AuditQuery
from farebox.errors import FareboxError, InvalidRequest
from farebox.identity.audit import PAGE, AuditLog, Break, Walk, record_json
from farebox.identity.roles import decide

VERIFY_MAX = 5000  # records the page's banner verifies at most (the newest ones)
PAGE_SIZE = 50
FILTERS = ("actor", "action", "target")
MAX_FILTER_CHARS = 256


@dataclass(frozen=True)
class ChainCheck:
    """What the banner says: records checked (``first``..``last`` seq), whole chain or only
    its tail, and the first break (None: intact)."""

    checked: int
    first: int
    last: int
    whole: bool
    broken: Break | None


async def check_chain(log: AuditLog, limit: int = VERIFY_MAX) -> ChainCheck:
    """Verify the whole chain when it has at most ``limit`` records, else its last ``limit``."""
    newest = await log.page(AuditQuery(limit=1))
    head = newest[0].seq if newest else 0
    walk, start = Walk(), max(0, head - limit)
    if start > 0:
        anchor = await log.store.scan(start - 1, 1)
        if anchor and anchor[0].seq == start:
            walk.seq, walk.hash = anchor[0].seq, anchor[0].hash
        else:
            start = 0  # the record to anchor on is missing: walk from the first one
    first, count = walk.seq + 1, 0
    while True:
        page = await log.store.scan(walk.seq, PAGE)
        for record in page:
            count += 1
            found = walk.step(record)
            if found is not None:
                return ChainCheck(count, first, record.seq, start == 0, found)
        if len(page) < PAGE:
            return ChainCheck(count, first, walk.seq, start == 0, None)


def changed(change: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The top-level fields a change's ``before`` and ``after`` disagree on (a create: every
    field of ``after``; a refusal or a failure without either: none)."""
    before, after = change.get("before"), change.get("after")
    if not isinstance(after, dict):
        return []
    if not isinstance(before, dict):
        return [(k, None, v) for k, v in after.items() if k not in ("object",)]
    names = sorted(set(before) | set(after))
    return [(k, before.get(k), after.get(k)) for k in names if before.get(k) != after.get(k)]


def audit_filters(params: Mapping[str, str]) -> tuple[AuditQuery, dict[str, str]]:
    filters = {name: params.get(name, "").strip() for name in (*FILTERS, "cursor")}
    for name, value in filters.items():
        if len(value) > MAX_FILTER_CHARS:
            raise InvalidRequest(f"The {name} filter is too long.", param=name)
    cursor = filters["cursor"]
    if cursor and (not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18):
        raise InvalidRequest("cursor must be a record's seq.", param="cursor")
    query = AuditQuery(
        actor=filters["actor"] or None,
        action=filters["action"] or None,
        target=filters["target"] or None,
        limit=PAGE_SIZE,
        cursor=int(cursor) if cursor else None,
    )
    return query, filters


class AuditPage:
    """The handler of ``/dashboard/audit``."""

    def __init__(self, base: DashboardRoutes, log: AuditLog) -> None:
        self.base = base
        self.log = log

    async def show(self, request: Request) -> Response:
        session = await self.base.access.session(request)
        if session is None:
            return secure(RedirectResponse("/dashboard/signin", status_code=303))
        actor = session_actor(session)
        if actor is None or decide(actor, "owner", False) != "allow":
            return self.base.refused(request, session, "hide")
        try:
            query, filters = audit_filters(request.query_params)
            records = await self.log.page(query)
            chain = await check_chain(self.log)
        except FareboxError as exc:
            return self.base.error(request, session, exc)
        rows: list[dict[str, Any]] = [
            {**record_json(r), "changed": changed(r.change)} for r in records
        ]
        older = {k: v for k, v in filters.items() if v and k != "cursor"}
        more = len(records) == PAGE_SIZE
        if more:
            older["cursor"] = str(records[-1].seq)
        return self.base.page("audit.html", request, session, records=rows, filters=filters,
                              chain=chain, verify_max=VERIFY_MAX,
                              next_query=urllib.parse.urlencode(older) if more else "")  # fmt: skip
