"""Guardrail findings over HTTP (issue 15): ``GET /admin/v1/guardrails/findings`` (every
tenant, or the one asked; a ``tenant_admin``: its own, forced) and
``GET /v1/me/guardrails/findings`` (a tenant key: its own tenant's, forced by the server).

Both answer ``{"object": "list", "data": [...], "next_cursor": ...}``, newest first, one row per
request with findings (``request_id``, ``tenant_id``, ``key_id``, ``workspace``, ``user``,
``model``, ``endpoint``, ``status``, ``at``, ``findings``: detector, category, action, score,
where; never the matched text). Filters: ``tenant``, ``key``, ``detector``, ``category``,
``action`` (a request matches when one of its findings has all those given), ``from``/``to``
(the request's start, ``[from, to)``); ``next_cursor`` is the next page's ``cursor``. Bad
parameters are a 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
from fastapi import Query

from farebox.api.admin.params import TenantFilter, finite_time, reject_unknown
from farebox.api.admin.requests import query_values
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute, Incoming, JSONBody
from farebox.api.openai import guarded
from farebox.errors import InvalidRequest, JwtScope, ServiceUnavailable
from farebox.guardrails.findings_watch import iso
from farebox.identity.tenancy import TENANT_ID
from farebox.stores.findings import FindingRow, FindingsPage, FindingsQuery, findings_of

LIMIT_DEFAULT = 50
LIMIT_MAX = 200
MAX_TEXT = 128
MAX_CURSOR = 2048
ACTIONS = ("flagged", "redacted", "blocked")
TENANT_PARAMS = ("key", "detector", "category", "action", "from", "to", "cursor", "limit")
WHEN = "unix seconds or ISO 8601 (UTC when no zone is given)"
Text = Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)]


def row_json(row: FindingRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "tenant_id": row.tenant_id,
        "key_id": row.key_id,
        "workspace": row.workspace,
        "user": row.user,
        "model": row.model_requested,
        "model_served": row.model_served,
        "endpoint": row.endpoint,
        "status": row.status,
        "http_status": row.http_status,
        "at": iso(row.started_at),
        "started_at": row.started_at,
        "findings": row.findings,
    }


def page_json(page: FindingsPage) -> dict[str, Any]:
    return {"object": "list", "data": [row_json(r) for r in page.rows],
            "next_cursor": page.next_cursor}  # fmt: skip


def _text(values: Mapping[str, Any], name: str, limit: int = MAX_TEXT) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        raise InvalidRequest(f"'{name}' must be 1 to {limit} characters, without U+0000.",
                             param=name)  # fmt: skip
    return value


def _limit(value: Any) -> int:
    if value is None:
        return LIMIT_DEFAULT
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 4:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMIT_MAX:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {LIMIT_MAX}.", param="limit")
    return value


def findings_query(values: Mapping[str, Any], tenant_id: str | None = None) -> FindingsQuery:
    """The query the parameters ask for (strings, as in a URL; ``limit`` may be an int).
    ``tenant_id``: forced (a tenant's view), else ``values["tenant"]``."""
    tenant = tenant_id if tenant_id is not None else _text(values, "tenant", 64)
    if tenant_id is None and tenant is not None and not TENANT_ID.match(tenant):
        raise InvalidRequest("'tenant' is not a tenant id.", param="tenant")
    action = _text(values, "action")
    if action is not None and action not in ACTIONS:
        raise InvalidRequest(f"'action' must be one of {', '.join(ACTIONS)}.", param="action")
    return FindingsQuery(
        tenant_id=tenant,
        key_id=_text(values, "key"),
        detector=_text(values, "detector"),
        category=_text(values, "category"),
        action=action,
        start=finite_time(_text(values, "from", 64), "from"),
        end=finite_time(_text(values, "to", 64), "to"),
        cursor=_text(values, "cursor", MAX_CURSOR),
        limit=_limit(values.get("limit")),
    )


async def list_findings(services: Services, query: FindingsQuery) -> dict[str, Any]:
    """One page of findings as the API answers it (``query``'s tenant: the caller's to set)."""
    role = findings_of(services.store)
    if role is None:
        raise ServiceUnavailable("This gateway's store keeps no guardrail findings.")
    return page_json(await role.page(query))


class GuardrailRoutes:
    """The handler of ``GET /admin/v1/guardrails/findings``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def list_findings(
        self,
        tenant: TenantFilter = None,
        key: Text = None,
        detector: Text = None,
        category: Text = None,
        action: Literal["flagged", "redacted", "blocked"] | None = None,
        start: Annotated[str | None, Query(alias="from", max_length=64, description=WHEN)] = None,
        end: Annotated[str | None, Query(alias="to", max_length=64, description=WHEN)] = None,
        cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR)] = None,
        limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = LIMIT_DEFAULT,
    ) -> dict[str, Any]:
        """Requests with guardrail findings, newest first: one page, filtered exactly (a
        request matches when one of its findings has the detector, category and action
        given); ``next_cursor`` (null on the last page) is the next page's ``cursor``."""
        given = {"tenant": tenant, "key": key, "detector": detector, "category": category,
                 "action": action, "from": start, "to": end, "cursor": cursor,
                 "limit": limit}  # fmt: skip
        return await list_findings(self.services, findings_query(given))


def me_route(services: Services) -> FastRoute:
    """``GET /v1/me/guardrails/findings``: the caller's own tenant's findings (a tenant key).
    A JWT caller (an end user) is refused: findings are the tenant's view."""

    async def me_findings(request: Incoming, request_id: str) -> JSONBody:
        who = await services.principal(request)
        if who.from_jwt:
            raise JwtScope("A JWT caller cannot list its tenant's guardrail findings.")
        values: dict[str, Any] = query_values(request.scope.get("query_string", b""))
        reject_unknown(values, TENANT_PARAMS)
        body = await list_findings(services, findings_query(values, who.tenant.id))
        return JSONBody(orjson.dumps(body), 200, {"x-farebox-request-id": request_id})

    return FastRoute("/v1/me/guardrails/findings", guarded(services, me_findings), ["GET"])
