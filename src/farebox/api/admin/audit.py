"""Admin endpoint of the audit trail: ``GET /admin/v1/audit``, a page of the hash-chained log
(``farebox.identity.audit``), filtered by actor, action, target and time. Owners only: the log
names every admin key and what each did."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query

from farebox.api.admin.params import finite_time
from farebox.api.context import Services
from farebox.core.audit import AuditQuery
from farebox.identity.audit import AuditLog, plain, record_json

LIMIT_MAX = 1000
Text = Annotated[str | None, Query(min_length=1, max_length=256)]
WHEN = "unix seconds or ISO 8601 (UTC when no zone is given)"


class AuditRoutes:
    """The handler of ``/audit``."""

    def __init__(self, services: Services) -> None:
        self.log = AuditLog(services.store.audit, services.clock)

    async def audit(
        self,
        actor: Text = None,
        action: Text = None,
        target: Text = None,
        start: Annotated[str | None, Query(alias="from", max_length=64, description=WHEN)] = None,
        end: Annotated[str | None, Query(alias="to", max_length=64, description=WHEN)] = None,
        limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = 100,
        cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        order: Literal["desc", "asc"] = "desc",
    ) -> dict[str, Any]:
        """The audit log, newest first (``order=asc``: oldest first), one page of at most
        ``limit`` records; ``next_cursor`` (null on the last page) is the next page's
        ``cursor``. ``from``/``to`` bound the record's time as ``[from, to)``."""
        # the fields as records store them: control characters escaped (``plain``)
        actor, action, target = (v if v is None else plain(v) for v in (actor, action, target))
        since, until = finite_time(start, "from"), finite_time(end, "to")
        query = AuditQuery(actor, action, target, since, until, limit, cursor,
                           descending=order == "desc")  # fmt: skip
        page = await self.log.page(query)
        more = len(page) == limit
        return {
            "object": "list",
            "data": [record_json(r) for r in page],
            "next_cursor": page[-1].seq if more and page else None,
        }
