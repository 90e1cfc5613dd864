"""The HTTP side: ``POST`` (JSON) and ``GET`` (query parameters) at ``/admin/graphql`` (an admin
key, resolved as the admin API resolves it: every role reads the admin schema, a
``tenant_admin`` its own tenant's schema) and ``/v1/graphql`` (a tenant key, authenticated as
the data plane authenticates it; its tenant goes in the context, and the tenant schema has no
other way to name one). No GraphiQL page, no batching (a list body is refused), queries only.

Answers: 200 with ``data`` and the standard ``errors`` array for every well-formed GraphQL
request (a resolver's ``FareboxError`` keeps its message, with its code in the error's
``extensions``; anything unexpected is logged and shown only as ``Internal error``); 400 with
an ``errors`` array for a malformed request (not JSON, no query, a batch); 401/403 in the API's
own error format for a missing or wrong key; 413 for a body over ``server.max_body_bytes``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin.router import admin_only
from farebox.api.context import Services
from farebox.api.errors import error_response
from farebox.api.fastpath import FareboxApp, Incoming
from farebox.api.graphql import limits
from farebox.api.graphql.context import GraphContext
from farebox.api.graphql.schema import Schema, admin_schema, tenant_schema
from farebox.errors import FareboxError, JwtScope, UnsupportedMediaType
from farebox.identity.tenancy import Tenancy

ADMIN_PATH = "/admin/graphql"
TENANT_PATH = "/v1/graphql"
QUERIES_ONLY = (OperationType.QUERY,)
GET_PARAMS = frozenset({"query", "variables", "operationName"})
log = logging.getLogger("farebox.graphql")

# who asks: the schema it is served and the context its resolvers read
ContextFor = Callable[[Request], Awaitable[tuple[Schema, GraphContext]]]
Endpoint = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """A request that is not a GraphQL request: answered 400 with an ``errors`` array."""


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _bad(message: str) -> Response:
    return _json({"errors": [{"message": message, "extensions": {"code": "bad_request"}}]}, 400)


def error_json(error: GraphQLError) -> dict[str, Any]:
    out: dict[str, Any] = dict(error.formatted)
    cause = error.original_error
    if isinstance(cause, FareboxError):
        out["message"] = cause.message
        out["extensions"] = {"code": cause.error_code or cause.type}
        if cause.param:
            out["extensions"]["param"] = cause.param
    elif cause is not None and not isinstance(cause, GraphQLError):
        out["message"] = "Internal error."
        out["extensions"] = {"code": "internal_error"}
    else:
        out.setdefault("extensions", {"code": "invalid_query"})
    return out


def _variables(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):  # GET: JSON in a query parameter
        try:
            value = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            raise BadRequest("'variables' must be a JSON object.") from None
    if value is not None and not isinstance(value, dict):
        raise BadRequest("'variables' must be a JSON object.")
    return value


async def operation(request: Request) -> tuple[str, dict[str, Any] | None, str | None]:
    """The query, variables and operation name of a GET or POST request."""
    if request.method == "GET":
        params = request.query_params
        unknown = sorted(set(params) - GET_PARAMS)
        if unknown:
            raise BadRequest(f"Unknown query parameter {unknown[0]!r}.")
        data: Any = {name: params.get(name) for name in GET_PARAMS if name in params}
    else:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise UnsupportedMediaType("Send the GraphQL request as application/json.")
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise BadRequest("The body is not valid JSON.") from None
    if isinstance(data, list):
        raise BadRequest("Batched requests are not supported: send one operation per request.")
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object with 'query'.")
    query, name = data.get("query"), data.get("operationName")
    if not isinstance(query, str) or not query.strip():
        raise BadRequest("'query' must be a non-empty string.")
    if name is not None and not isinstance(name, str):
        raise BadRequest("'operationName' must be a string.")
    return query, _variables(data.get("variables")), name


async def run(schema: Schema, context: GraphContext, request: Request) -> Response:
    try:
        query, variables, name = await operation(request)
    except BadRequest as exc:
        return _bad(str(exc))
    refused = limits.precheck(query)
    if refused is not None:
        error = {"message": refused, "extensions": {"code": "query_too_costly"}}
        return _json({"data": None, "errors": [error]})
    try:
        result = await schema.execute(
            query, variables, context, operation_name=name, allowed_operation_types=QUERIES_ONLY
        )
    except InvalidOperationTypeError:
        message = "Only queries are served here (no mutations, no subscriptions)."
        return _json({"data": None, "errors": [{"message": message}]})
    except CannotGetOperationTypeError:  # no operation in the document, or none of that name
        message = "The document has no operation to run (or none named by 'operationName')."
        return _json({"data": None, "errors": [{"message": message}]})
    except Exception:  # a defect here must not become a traceback on the wire
        log.exception("GraphQL execution failed")
        return _json({"data": None, "errors": [{"message": "Internal error."}]})
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error_json(e) for e in result.errors]
    return _json(body)


def endpoint(context_for: ContextFor) -> Endpoint:
    async def serve(request: Request) -> Response:
        try:
            schema, context = await context_for(request)
            return await run(schema, context, request)
        except FareboxError as exc:
            return error_response(exc)

    return serve


def mount(app: FareboxApp, services: Services, tenancy: Tenancy, watch: AnomalyWatch) -> None:
    """Add ``/admin/graphql`` and ``/v1/graphql`` to ``app``. An admin key of any role but
    ``tenant_admin`` is served the admin schema (read-only: queries only, so every role may
    read it); a ``tenant_admin`` is served the tenant schema of its own tenant, as a tenant
    key is on ``/v1/graphql`` (a JWT caller, an end user, is refused 403 ``jwt_scope``)."""
    require_admin = admin_only(services)
    every, own = admin_schema(), tenant_schema()

    async def admin_context(request: Request) -> tuple[Schema, GraphContext]:
        actor = await require_admin(request)
        if actor.tenant_bound:
            return own, GraphContext(services, tenancy, watch, actor.tenant)
        return every, GraphContext(services, tenancy, watch, None)

    async def tenant_context(request: Request) -> tuple[Schema, GraphContext]:
        who = await services.principal(Incoming(request.scope, request.receive))
        if who.from_jwt:  # an end user, not the tenant's backend: the schema is tenant-wide
            raise JwtScope("/v1/graphql serves a tenant-wide view; a JWT caller may not use it.")
        return own, GraphContext(services, tenancy, watch, who.tenant.id)

    methods = ["GET", "POST"]
    admin = endpoint(admin_context)
    tenant = endpoint(tenant_context)
    app.router.add_route(ADMIN_PATH, admin, methods=methods, include_in_schema=False)
    app.router.add_route(TENANT_PATH, tenant, methods=methods, include_in_schema=False)
