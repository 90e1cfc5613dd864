"""The request log page's filters: read from the query string, checked, and turned into a
``RequestQuery``. A tenant's session always filters by its own tenant, whatever it sends."""

from __future__ import annotations

from collections.abc import Mapping

from farebox.api.dashboard.reports import PAGE_SIZE
from farebox.api.dashboard.sessions import Session
from farebox.core.records import RequestQuery
from farebox.errors import InvalidRequest
from farebox.identity.tenancy import TENANT_ID

FILTERS = ("tenant", "status", "model", "tag", "cursor", "limit")
MAX_PAGE = 200
MAX_FILTER_CHARS = 256


def _tag(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise InvalidRequest("A tag filter looks like name=value.", param="tag")
    return name.strip(), value.strip()


def _limit(text: str) -> int:
    if not text:
        return PAGE_SIZE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_PAGE}.", param="limit")
    return int(text)


def request_filters(
    params: Mapping[str, str], session: Session
) -> tuple[RequestQuery, dict[str, str]]:
    """The query for one page of the log, and the filters to show back in the form."""
    filters = {name: params.get(name, "").strip() for name in FILTERS}
    for name, value in filters.items():
        if len(value) > MAX_FILTER_CHARS:
            raise InvalidRequest(f"The {name} filter is too long.", param=name)
    if session.role == "tenant":
        filters["tenant"] = session.tenant or ""
    tenant = filters["tenant"] or None
    if tenant is not None and not TENANT_ID.match(tenant):
        raise InvalidRequest("That is not a tenant id.", param="tenant")
    query = RequestQuery(
        tenant_id=tenant,
        status=filters["status"] or None,
        model=filters["model"] or None,
        tag=_tag(filters["tag"]) if filters["tag"] else None,
        cursor=filters["cursor"] or None,
        limit=_limit(filters["limit"]),
    )
    return query, filters
