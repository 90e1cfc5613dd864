"""Admin API (``Authorization: Bearer $FAREBOX_ADMIN_KEY``): the table of its operations.

The handlers live by resource (``tenants``, ``keys``, ``budgets``, ``billing``, ``operations``,
``anomaly``); this module says which path and method reach each, behind the admin key and the
check on query parameters. The OpenAPI document lists the operations in this table's order.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin.anomaly import Anomalies
from farebox.api.admin.billing import Billing
from farebox.api.admin.budgets import Budgets
from farebox.api.admin.keys import Keys
from farebox.api.admin.operations import Operations
from farebox.api.admin.params import parse_time as parse_time  # the CLI parses --from/--to
from farebox.api.admin.tenants import Tenants
from farebox.api.context import Services
from farebox.billing.exporter import Exporter
from farebox.core.keys import hash_key
from farebox.errors import AuthenticationError, InvalidRequest
from farebox.gateway.auth import bearer_key
from farebox.identity.tenancy import Tenancy

CREATED: Mapping[str, Any] = MappingProxyType({"status_code": 201})
TEXT: Mapping[str, Any] = MappingProxyType({"response_class": PlainTextResponse})
PLAIN: Mapping[str, Any] = MappingProxyType({})


class Operation(NamedTuple):
    """One admin operation: method, path under ``/admin/v1``, handler, route options."""

    method: str
    path: str
    endpoint: Callable[..., Awaitable[Any]]
    options: Mapping[str, Any] = PLAIN


def admin_only(services: Services) -> Callable[[Request], Awaitable[None]]:
    """The dependency every admin operation has: the caller presents the admin key."""

    async def require_admin(request: Request) -> None:
        presented = hash_key(services.secret, bearer_key(request.headers))
        if not hmac.compare_digest(presented, services.admin_key_hash):
            raise AuthenticationError("This endpoint needs the admin key.")

    return require_admin


def known_query(request: Request) -> None:
    """Refuse query parameters the operation does not take: a typo such as ``grop_by``
    would otherwise be ignored silently and answer with the wrong rows."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: set[str] = set()
    stack = [dependant]
    while stack:
        node = stack.pop()
        known.update(p.alias for p in node.query_params)
        stack.extend(node.dependencies)
    for name in request.query_params:
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise InvalidRequest(
                f"Unknown query parameter {name!r}; this operation takes: {allowed}.",
                param=name,
            )


def operations(
    services: Services, tenancy: Tenancy, exporter: Exporter, watch: AnomalyWatch
) -> list[Operation]:
    """Every admin operation, in the order the OpenAPI document lists them."""
    tenant = Tenants(services, tenancy, watch)
    key = Keys(services, tenancy, watch)
    budget = Budgets(services, tenancy)
    billing = Billing(services, tenancy, exporter)
    ops = Operations(services, exporter)
    anomaly = Anomalies(watch, services.store)
    return [
        Operation("POST", "/tenants", tenant.create_tenant, CREATED),
        Operation("GET", "/tenants", tenant.list_tenants),
        Operation("GET", "/tenants/{tenant_id}", tenant.get_tenant),
        Operation("PATCH", "/tenants/{tenant_id}", tenant.patch_tenant),
        Operation("GET", "/tenants/{tenant_id}/limits", tenant.tenant_limits),
        Operation("GET", "/deployments", ops.deployments),
        Operation("GET", "/metrics", ops.metrics, TEXT),
        Operation("GET", "/export", billing.export_status),
        Operation("GET", "/dead-letters", billing.dead_letters),
        Operation("POST", "/dead-letters/retry", billing.retry_dead_letters),
        Operation("GET", "/margins", billing.margin_report),
        Operation("GET", "/reconciliation", billing.reconciliation),
        Operation("GET", "/plans", ops.plans),
        Operation("POST", "/tenants/{tenant_id}/pause", tenant.pause_tenant),
        Operation("POST", "/tenants/{tenant_id}/resume", tenant.resume_tenant),
        Operation("GET", "/tenants/{tenant_id}/budgets", budget.tenant_budgets),
        Operation("POST", "/tenants/{tenant_id}/budget-increases", budget.increase_budget),
        Operation("PATCH", "/keys/{key_id}", key.patch_key),
        Operation("GET", "/budget-alerts", budget.budget_alerts),
        Operation("GET", "/unsettled", billing.unsettled),
        Operation("POST", "/tenants/{tenant_id}/keys", key.create_key, CREATED),
        Operation("GET", "/tenants/{tenant_id}/keys", key.list_keys),
        Operation("POST", "/service-keys", key.create_service_key, CREATED),
        Operation("DELETE", "/keys/{key_id}", key.revoke_key),
        Operation("POST", "/keys/{key_id}/pause", key.pause_key),
        Operation("POST", "/keys/{key_id}/resume", key.resume_key),
        Operation("GET", "/anomalies", anomaly.anomalies),
        Operation("POST", "/anomalies/{incident_id}/resolve", anomaly.resolve),
        Operation("GET", "/usage", billing.usage),
    ]


def router(
    services: Services, tenancy: Tenancy, exporter: Exporter, watch: AnomalyWatch
) -> APIRouter:
    """The admin API under ``/admin/v1``, every operation behind the admin key."""
    api = APIRouter(
        prefix="/admin/v1",
        dependencies=[Depends(admin_only(services)), Depends(known_query)],
        tags=["admin"],
    )
    for op in operations(services, tenancy, exporter, watch):
        api.add_api_route(op.path, op.endpoint, methods=[op.method], **op.options)
    return api
