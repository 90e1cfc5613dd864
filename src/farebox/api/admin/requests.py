"""The request log over HTTP: ``GET /admin/v1/requests`` (every tenant, or the one asked) and
``GET /v1/me/requests`` (a tenant key: its own tenant only, forced by the server).

Both answer ``{"object": "list", "data": [...], "next_cursor": ...}``, newest first, one row
per ledger entry (money as exact decimal strings, as the rest of the admin API); pass
``next_cursor`` back as ``cursor`` for the next page, until it is null. Bad parameters are a
400 naming the parameter.

The dashboard and GraphQL call ``request_log`` (admin) or ``tenant_request_log`` (a tenant
view: the tenant comes from the signed-in key, never from what the caller sent).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Query

from farebox.api.admin.params import TenantFilter, finite_time, reject_unknown
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute, Incoming, JSONBody
from farebox.api.openai import guarded
from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry, RequestPage, RequestQuery
from farebox.errors import InvalidRequest, JwtScope
from farebox.identity.tenancy import TENANT_ID
from farebox.stores.base import ReportStore

LIMIT_DEFAULT = 50
LIMIT_MAX = 200
MAX_TEXT = 256  # a filter's text (key id, user, feature, model, status, a tag's name:value)
MAX_CURSOR = 2048
# every parameter, in the order the document lists them; ``tenant`` is the admin's only
PARAMS = ("tenant", "start", "end", "status", "key", "user", "feature", "model", "cache", "tag",
          "cursor", "limit")  # fmt: skip
TENANT_PARAMS = PARAMS[1:]

Text = Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)]
Time = Annotated[
    str | None,
    Query(max_length=64, description="unix seconds or ISO 8601 (UTC when no zone is given)"),
]


def _text(values: Mapping[str, Any], name: str, limit: int = MAX_TEXT) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        raise InvalidRequest(
            f"'{name}' must be 1 to {limit} characters, without U+0000 (got {value!r:.80}).",
            param=name,
        )
    return value


def _tag(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    name, colon, text = value.partition(":")
    if not colon or not name:
        raise InvalidRequest(
            f"'tag' must be name:value, a metadata member and its value (got {value!r:.80}).",
            param="tag",
        )
    return name, text


def _limit(value: Any) -> int:
    if value is None:
        return LIMIT_DEFAULT
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 4:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMIT_MAX:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {LIMIT_MAX} (got {value!r:.20}).", param="limit"
        )
    return value


def request_query(values: Mapping[str, Any], tenant_id: str | None = None) -> RequestQuery:
    """The query the parameters ``values`` ask for (strings, as in a URL; ``limit`` may be
    an int). ``tenant_id``: forced (a tenant's view), else ``values["tenant"]``."""
    tenant = tenant_id if tenant_id is not None else _text(values, "tenant", 64)
    if tenant_id is None and tenant is not None and not TENANT_ID.match(tenant):
        raise InvalidRequest(f"'tenant' is not a tenant id (got {tenant!r:.80}).", param="tenant")
    return RequestQuery(
        tenant_id=tenant,
        start=finite_time(_text(values, "start", 64), "start"),
        end=finite_time(_text(values, "end", 64), "end"),
        status=_text(values, "status"),
        key_id=_text(values, "key"),
        user=_text(values, "user"),
        feature=_text(values, "feature"),
        model=_text(values, "model"),
        cache=_text(values, "cache"),
        tag=_tag(_text(values, "tag", 2 * MAX_TEXT)),
        cursor=_text(values, "cursor", MAX_CURSOR),
        limit=_limit(values.get("limit")),
    )


def _iso(ts: float) -> str:
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return str(ts)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry_json(e: LedgerEntry) -> dict[str, Any]:
    """One row of the request log."""
    return {
        "time": _iso(e.started_at),
        "started_at": e.started_at,
        "request_id": e.request_id,
        "tenant": e.tenant_id,
        "key_id": e.key_id,
        "user": e.user,
        "feature": e.feature,
        "endpoint": e.endpoint,
        "model_requested": e.model_requested,
        "model_served": e.model_served,
        "provider": e.provider,
        "status": e.status,
        "http_status": e.http_status,
        "error_code": e.error_code,
        "stream": e.stream,
        "tokens": {
            "input": e.input_tokens,
            "cached": e.cached_input_tokens,
            "cache_write": e.cache_write_5m_tokens + e.cache_write_1h_tokens,
            "output": e.output_tokens,
            "reasoning": e.reasoning_tokens,
        },
        "cost_usd": format_usd(e.cost),
        "revenue_usd": format_usd(e.revenue),
        "cache": e.cache,  # hit-exact | hit-semantic | miss | bypass, or null
        "saved_usd": format_usd(e.saved),  # a hit's original request's cost
        "latency_ms": e.latency_ms,
        "ttft_ms": e.ttft_ms,
        "upstream_ms": e.upstream_ms,
        "metadata": e.metadata or {},
    }


def page_json(page: RequestPage) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [entry_json(e) for e in page.entries],
        "next_cursor": page.next_cursor,
    }


async def request_log(store: ReportStore, query: RequestQuery) -> dict[str, Any]:
    """One page of the request log as the admin API answers it (any tenant, as ``query``
    says: only for an admin)."""
    return page_json(await store.requests(query))


async def tenant_request_log(
    store: ReportStore, tenant_id: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """One page of ``tenant_id``'s request log, from parameters a tenant sent (``tenant`` is
    not one of them: the tenant is the caller's, whatever it asks)."""
    reject_unknown(values, TENANT_PARAMS)
    return await request_log(store, request_query(values, tenant_id))


class RequestRoutes:
    """The handler of ``GET /admin/v1/requests``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def list_requests(
        self,
        tenant: TenantFilter = None,
        start: Time = None,
        end: Time = None,
        status: Text = None,
        key: Text = None,
        user: Text = None,
        feature: Text = None,
        model: Text = None,
        cache: Text = None,
        tag: Annotated[
            str | None, Query(min_length=2, max_length=2 * MAX_TEXT, description="name:value")
        ] = None,  # fmt: skip
        cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR)] = None,
        limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = LIMIT_DEFAULT,
    ) -> dict[str, Any]:
        """The request log, newest first: one page, filtered exactly; ``next_cursor`` (null on
        the last page) is the next page's ``cursor``."""
        given = {"tenant": tenant, "start": start, "end": end, "status": status, "key": key,
                 "user": user, "feature": feature, "model": model, "cache": cache, "tag": tag,
                 "cursor": cursor, "limit": limit}  # fmt: skip
        return await request_log(self.services.store, request_query(given))


def query_values(raw: bytes) -> dict[str, str]:
    """A query string's parameters; one given twice, or too many, is a 400."""
    values: dict[str, str] = {}
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, max_num_fields=32)
    except ValueError:
        raise InvalidRequest("Too many query parameters.") from None
    for name, value in pairs:
        if name in values:
            raise InvalidRequest(
                f"The query parameter {name!r:.80} is given more than once.", param=name[:80]
            )
        values[name] = value
    return values


def me_route(services: Services) -> FastRoute:
    """``GET /v1/me/requests``: the caller's own tenant's request log (a tenant key); a JWT
    caller's own requests only (those of its user claim; a 403 ``jwt_scope`` without one)."""

    async def me_requests(request: Incoming, request_id: str) -> JSONBody:
        who = await services.principal(request)
        values: dict[str, Any] = query_values(request.scope.get("query_string", b""))
        if who.from_jwt:  # an end user: its own requests only, whatever it asks
            if not who.user_fixed:
                raise JwtScope(
                    "A JWT caller sees only its own requests, and this token has no user "
                    "claim (auth.jwt.user_claim) to scope them to."
                )
            values = {**values, "user": who.user}
        body = await tenant_request_log(services.store, who.tenant.id, values)
        return JSONBody(orjson.dumps(body), 200, {"x-farebox-request-id": request_id})

    return FastRoute("/v1/me/requests", guarded(services, me_requests), ["GET"])
