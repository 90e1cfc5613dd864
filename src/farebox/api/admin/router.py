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
from farebox.api.admin.anomaly import AnomalyRoutes
from farebox.api.admin.audit import AuditRoutes
from farebox.api.admin.billing import BillingRoutes
from farebox.api.admin.budgets import BudgetRoutes
from farebox.api.admin.cache import CacheRoutes
from farebox.api.admin.credit_sync import CreditSyncRoutes
from farebox.api.admin.credits import CreditRoutes
from farebox.api.admin.integrations import IntegrationRoutes
from farebox.api.admin.invoices import InvoiceRoutes
from farebox.api.admin.keys import KeyRoutes
from farebox.api.admin.operations import OperationRoutes
from farebox.api.admin.provider_reconcile import ProviderReconcileRoutes
from farebox.api.admin.reports import ReportRoutes
from farebox.api.admin.requests import RequestRoutes
from farebox.api.admin.revenue import RevenueRoutes
from farebox.api.admin.tenants import TenantRoutes
from farebox.api.admin.workspaces import METADATA_QUERY, QUERY_PREFIXES, WorkspaceRoutes
from farebox.api.context import Services
from farebox.billing.exporter import Exporter
from farebox.core.keys import hash_key
from farebox.errors import AuthenticationError, InvalidRequest
from farebox.gateway.auth import bearer_key
from farebox.identity.tenancy import Tenancy

CREATED: Mapping[str, Any] = MappingProxyType({"status_code": 201})
TEXT: Mapping[str, Any] = MappingProxyType({"response_class": PlainTextResponse})
PLAIN: Mapping[str, Any] = MappingProxyType({})


class AdminRoute(NamedTuple):
    """One admin operation: method, path under ``/admin/v1``, handler, route options, and
    what it needs of the caller's admin role (``farebox.identity.roles``): ``need`` is one of
    ``read``, ``operate``, ``billing``, ``owner``; ``tenant_ok``: a ``tenant_admin`` may call
    it, on its own tenant only (anything else answers 404)."""

    method: str
    path: str
    endpoint: Callable[..., Awaitable[Any]]
    options: Mapping[str, Any] = PLAIN
    need: str = "owner"
    tenant_ok: bool = False
    # audit trail (api/admin/audit_trail.py): True for a POST/PUT/PATCH/DELETE that changes
    # nothing (a what-if), which is then recorded only when refused
    read_only: bool = False


def admin_only(services: Services) -> Callable[[Request], Awaitable[None]]:
    """The dependency every admin operation has: the caller presents the admin key."""

    async def require_admin(request: Request) -> None:
        presented = hash_key(services.secret, bearer_key(request.headers))
        matches = [hmac.compare_digest(presented, h) for h in services.admin_hashes() if h]
        if not any(matches):
            raise AuthenticationError("This endpoint needs the admin key.")

    return require_admin


def known_query(request: Request) -> None:
    """Refuse query parameters the operation does not take (a typo such as ``grop_by``
    would otherwise be ignored silently and answer with the wrong rows), and one given
    twice (the framework would take the last without a word)."""
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
    extra = getattr(route, "openapi_extra", None) or {}
    prefixes = tuple(extra.get(QUERY_PREFIXES, ()))  # free-form families, e.g. ``metadata.*``
    params = request.query_params
    for name in params:
        if name not in known and not (prefixes and name.startswith(prefixes)):
            allowed = ", ".join(sorted(known)) or "none"
            raise InvalidRequest(
                f"Unknown query parameter {name!r}; this operation takes: {allowed}.",
                param=name,
            )
        if len(params.getlist(name)) > 1:  # which one would filter? refused, none picked
            raise InvalidRequest(
                f"The query parameter {name!r} is given more than once.", param=name
            )


def admin_routes(
    services: Services, tenancy: Tenancy, exporter: Exporter, watch: AnomalyWatch
) -> list[AdminRoute]:
    """Every admin operation, in the order the OpenAPI document lists them."""
    tenant = TenantRoutes(services, tenancy, watch)
    key = KeyRoutes(services, tenancy, watch)
    budget = BudgetRoutes(services, tenancy)
    billing = BillingRoutes(services, tenancy, exporter)
    ops = OperationRoutes(services, exporter)
    anomaly = AnomalyRoutes(watch, services.store)
    reports = ReportRoutes(services, tenancy)
    revenue = RevenueRoutes(services, tenancy)
    requests = RequestRoutes(services)
    cache = CacheRoutes(services, tenancy)
    bill = ProviderReconcileRoutes(services, services.http, services.on_alert, services.clock)
    return [
        AdminRoute("POST", "/tenants", tenant.create_tenant, CREATED),
        AdminRoute("GET", "/tenants", tenant.list_tenants),
        AdminRoute("GET", "/tenants/{tenant_id}", tenant.get_tenant),
        AdminRoute("PATCH", "/tenants/{tenant_id}", tenant.patch_tenant),
        AdminRoute("GET", "/tenants/{tenant_id}/limits", tenant.tenant_limits),
        AdminRoute("GET", "/deployments", ops.deployments),
        AdminRoute("GET", "/metrics", ops.metrics, TEXT),
        AdminRoute("GET", "/export", billing.export_status),
        AdminRoute("GET", "/dead-letters", billing.dead_letters),
        AdminRoute("POST", "/dead-letters/retry", billing.retry_dead_letters),
        AdminRoute("GET", "/margins", billing.margin_report),
        AdminRoute("GET", "/plan-profitability", billing.profitability),
        AdminRoute("GET", "/reconciliation", billing.reconciliation),
        AdminRoute("GET", "/providers/{name}/reconcile", bill.provider_reconcile),
        AdminRoute("POST", "/reprice", revenue.what_if, read_only=True),
        AdminRoute("GET", "/upsell", revenue.upsell),
        AdminRoute("GET", "/plans", ops.plans),
        AdminRoute("POST", "/tenants/{tenant_id}/pause", tenant.pause_tenant),
        AdminRoute("POST", "/tenants/{tenant_id}/resume", tenant.resume_tenant),
        AdminRoute("GET", "/tenants/{tenant_id}/budgets", budget.tenant_budgets),
        AdminRoute("POST", "/tenants/{tenant_id}/budget-increases", budget.increase_budget),
        AdminRoute("PATCH", "/keys/{key_id}", key.patch_key),
        AdminRoute("GET", "/budget-alerts", budget.budget_alerts),
        AdminRoute("GET", "/unsettled", billing.unsettled),
        AdminRoute("POST", "/tenants/{tenant_id}/keys", key.create_key, CREATED),
        AdminRoute("GET", "/tenants/{tenant_id}/keys", key.list_keys),
        AdminRoute("POST", "/service-keys", key.create_service_key, CREATED),
        AdminRoute("DELETE", "/keys/{key_id}", key.revoke_key),
        AdminRoute("POST", "/keys/{key_id}/pause", key.pause_key),
        AdminRoute("POST", "/keys/{key_id}/resume", key.resume_key),
        AdminRoute("GET", "/anomalies", anomaly.anomalies),
        AdminRoute("POST", "/anomalies/{incident_id}/resolve", anomaly.resolve),
        AdminRoute("GET", "/usage", billing.usage),
        AdminRoute("GET", "/series", reports.series),
        AdminRoute("GET", "/top-spenders", reports.top_spenders),
        AdminRoute("GET", "/requests", requests.list_requests),
        AdminRoute("GET", "/tenants/{tenant_id}/cache", cache.tenant_cache),
        AdminRoute("DELETE", "/tenants/{tenant_id}/cache", cache.purge_cache),
        AdminRoute("GET", "/cache", cache.all_caches),
        *revenue_routes(services, tenancy),
        AdminRoute("GET", "/audit", AuditRoutes(services).audit, need="owner"),  # issue 14
        *integration_routes(services, tenancy),
        *workspace_routes(services),
    ]


def workspace_routes(services: Services) -> list[AdminRoute]:
    """Issue 14's workspaces, and the key listing filtered by workspace and key metadata."""
    ws = WorkspaceRoutes(services)
    spaces, one = (
        "/tenants/{tenant_id}/workspaces",
        "/tenants/{tenant_id}/workspaces/{workspace_id}",
    )
    return [
        AdminRoute("POST", spaces, ws.create_workspace, CREATED, need="operate", tenant_ok=True),
        AdminRoute("GET", spaces, ws.list_workspaces, need="read", tenant_ok=True),
        AdminRoute("GET", one, ws.get_workspace, need="read", tenant_ok=True),
        AdminRoute("PATCH", one, ws.patch_workspace, need="operate", tenant_ok=True),
        AdminRoute("DELETE", one, ws.delete_workspace, need="operate", tenant_ok=True),
        AdminRoute("GET", "/keys", ws.list_keys, METADATA_QUERY, need="read", tenant_ok=True),
    ]


def revenue_routes(services: Services, tenancy: Tenancy) -> list[AdminRoute]:
    """Issue 13's operations: prepaid credits, parked webhook grants, the invoice preview."""
    credits = CreditRoutes(services, tenancy)
    invoices = InvoiceRoutes(services)
    credit_sync = CreditSyncRoutes(services)
    return [
        AdminRoute("POST", "/tenants/{tenant_id}/credits", credits.grant, CREATED),
        AdminRoute("GET", "/tenants/{tenant_id}/credits", credits.credits),
        AdminRoute("GET", "/tenants/{tenant_id}/invoice", invoices.tenant_invoice),
        AdminRoute("GET", "/credits/parked", credit_sync.parked),
        AdminRoute("POST", "/credits/parked/{parked_id}/apply", credit_sync.apply_parked),
    ]


def integration_routes(services: Services, tenancy: Tenancy) -> list[AdminRoute]:
    """Issue 14's provider-credential vault: the platform's keys (owner only) and a
    tenant's own (bring your own key: an operator, or the tenant's own tenant_admin)."""
    vault = IntegrationRoutes(services, tenancy)
    own = "/tenants/{tenant_id}/integrations/{provider}"
    return [
        AdminRoute("POST", "/integrations", vault.create, CREATED, need="owner"),
        AdminRoute("GET", "/integrations", vault.list_all, need="owner"),
        AdminRoute("POST", "/integrations/rekey", vault.rekey, need="owner"),
        AdminRoute("POST", "/integrations/{name}/rotate", vault.rotate, need="owner"),
        AdminRoute("DELETE", "/integrations/{name}", vault.delete, need="owner"),
        AdminRoute("PUT", own, vault.put_own, need="operate", tenant_ok=True),
        AdminRoute("GET", own, vault.get_own, need="operate", tenant_ok=True),
        AdminRoute("DELETE", own, vault.delete_own, need="operate", tenant_ok=True),
    ]


def router(
    services: Services,
    tenancy: Tenancy,
    exporter: Exporter,
    watch: AnomalyWatch,
    ops: list[AdminRoute] | None = None,
) -> APIRouter:
    """The admin API under ``/admin/v1``, every operation behind the admin key. ``ops``: the
    operations, if already made (the audit trail reads the same table)."""
    api = APIRouter(
        prefix="/admin/v1",
        dependencies=[Depends(admin_only(services)), Depends(known_query)],
        tags=["admin"],
    )
    for op in ops or admin_routes(services, tenancy, exporter, watch):
        api.add_api_route(op.path, op.endpoint, methods=[op.method], **op.options)
    return api
