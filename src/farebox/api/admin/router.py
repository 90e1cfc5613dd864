"""Admin API (``Authorization: Bearer`` an admin key): the table of its operations.

The handlers live by resource (``tenants``, ``keys``, ``budgets``, ``billing``, ``operations``,
``anomaly``, ``admin_keys``); this module says which path and method reach each, what each
needs of the caller's role (``need``, ``tenant_ok``: checked by ``access`` before anything
else, and stated in the OpenAPI entry as ``x-farebox-access``), and the check on query
parameters. The OpenAPI document lists the operations in this table's order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin.access import POLICY, access, actor_of, policy
from farebox.api.admin.admin_keys import AdminKeyRoutes
from farebox.api.admin.anomaly import AnomalyRoutes
from farebox.api.admin.audit import AuditRoutes
from farebox.api.admin.billing import BillingRoutes
from farebox.api.admin.budgets import BudgetRoutes
from farebox.api.admin.cache import CacheRoutes
from farebox.api.admin.credit_sync import CreditSyncRoutes
from farebox.api.admin.credits import CreditRoutes
from farebox.api.admin.guardrails import GuardrailRoutes
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
from farebox.errors import InvalidRequest
from farebox.identity.roles import AdminActor
from farebox.identity.tenancy import Tenancy

CREATED: Mapping[str, Any] = MappingProxyType({"status_code": 201})
TEXT: Mapping[str, Any] = MappingProxyType({"response_class": PlainTextResponse})
PLAIN: Mapping[str, Any] = MappingProxyType({})
READ, OPERATE, BILLING, OWNER = "read", "operate", "billing", "owner"  # ``AdminRoute.need``
OWN = True  # ``AdminRoute.tenant_ok``: a tenant_admin may call it, on its own tenant


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


def admin_only(services: Services) -> Callable[[Request], Awaitable[AdminActor]]:
    """Who calls, for an endpoint outside this table (GraphQL): any admin key's actor, or
    401. What the actor may do is the endpoint's to decide (``farebox.identity.roles``)."""

    async def require_admin(request: Request) -> AdminActor:
        return await actor_of(services, request)

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
    revenue = RevenueRoutes(services, tenancy)
    bill = ProviderReconcileRoutes(services, services.http, services.on_alert, services.clock)
    return [
        AdminRoute("POST", "/tenants", tenant.create_tenant, CREATED, OPERATE),
        AdminRoute("GET", "/tenants", tenant.list_tenants, need=READ),
        AdminRoute("GET", "/tenants/{tenant_id}", tenant.get_tenant, PLAIN, READ, OWN),
        # a tenant_admin: within its plan (farebox.identity.role_caps)
        AdminRoute("PATCH", "/tenants/{tenant_id}", tenant.patch_tenant, PLAIN, OPERATE, OWN),
        AdminRoute("GET", "/tenants/{tenant_id}/limits", tenant.tenant_limits, PLAIN, READ, OWN),
        AdminRoute("GET", "/deployments", ops.deployments, need=READ),
        AdminRoute("GET", "/metrics", ops.metrics, TEXT, READ),
        AdminRoute("GET", "/export", billing.export_status, need=READ),
        AdminRoute("GET", "/dead-letters", billing.dead_letters, need=READ),
        AdminRoute("POST", "/dead-letters/retry", billing.retry_dead_letters, need=BILLING),
        AdminRoute("GET", "/margins", billing.margin_report, need=READ),
        AdminRoute("GET", "/plan-profitability", billing.profitability, need=READ),
        # both ask the billing systems or a provider with the platform's credentials
        AdminRoute("GET", "/reconciliation", billing.reconciliation, need=BILLING),
        AdminRoute("GET", "/providers/{name}/reconcile", bill.provider_reconcile, need=BILLING),
        AdminRoute(
            "POST", "/reprice", revenue.what_if, need=READ, read_only=True
        ),  # a what-if: changes nothing
        AdminRoute("GET", "/upsell", revenue.upsell, need=READ),
        AdminRoute("GET", "/plans", ops.plans, need=READ),
        AdminRoute("POST", "/tenants/{tenant_id}/pause", tenant.pause_tenant, need=OPERATE),
        AdminRoute("POST", "/tenants/{tenant_id}/resume", tenant.resume_tenant, need=OPERATE),
        AdminRoute("GET", "/tenants/{tenant_id}/budgets", budget.tenant_budgets, PLAIN, READ, OWN),
        # above the plan: never a tenant_admin's
        AdminRoute(
            "POST", "/tenants/{tenant_id}/budget-increases", budget.increase_budget, need=OPERATE
        ),
        AdminRoute("PATCH", "/keys/{key_id}", key.patch_key, PLAIN, OPERATE, OWN),
        AdminRoute("GET", "/budget-alerts", budget.budget_alerts, PLAIN, READ, OWN),
        AdminRoute("GET", "/unsettled", billing.unsettled, need=READ),
        AdminRoute("POST", "/tenants/{tenant_id}/keys", key.create_key, CREATED, OPERATE, OWN),
        AdminRoute("GET", "/tenants/{tenant_id}/keys", key.list_keys, PLAIN, READ, OWN),
        # a service key acts for any tenant: a credential of the platform
        AdminRoute("POST", "/service-keys", key.create_service_key, CREATED, OWNER),
        AdminRoute("DELETE", "/keys/{key_id}", key.revoke_key, PLAIN, OPERATE, OWN),
        AdminRoute("POST", "/keys/{key_id}/pause", key.pause_key, PLAIN, OPERATE, OWN),
        # the anomaly watch pauses keys too: resuming one is the platform's call
        AdminRoute("POST", "/keys/{key_id}/resume", key.resume_key, need=OPERATE),
        AdminRoute("GET", "/anomalies", anomaly.anomalies, PLAIN, READ, OWN),
        AdminRoute("POST", "/anomalies/{incident_id}/resolve", anomaly.resolve, need=OPERATE),
        *report_routes(services, tenancy, billing),
        *revenue_routes(services, tenancy),
        *identity_routes(services, tenancy),
    ]


def report_routes(services: Services, tenancy: Tenancy, billing: BillingRoutes) -> list[AdminRoute]:
    """Usage, series, top spenders, the request log and the response cache."""
    reports = ReportRoutes(services, tenancy)
    requests = RequestRoutes(services)
    cache = CacheRoutes(services, tenancy)
    guard = GuardrailRoutes(services)  # issue 15
    return [
        AdminRoute("GET", "/usage", billing.usage, PLAIN, READ, OWN),
        AdminRoute("GET", "/series", reports.series, PLAIN, READ, OWN),
        AdminRoute("GET", "/top-spenders", reports.top_spenders, need=READ),
        AdminRoute("GET", "/requests", requests.list_requests, PLAIN, READ, OWN),
        AdminRoute("GET", "/tenants/{tenant_id}/cache", cache.tenant_cache, PLAIN, READ, OWN),
        AdminRoute("DELETE", "/tenants/{tenant_id}/cache", cache.purge_cache, PLAIN, OPERATE, OWN),
        AdminRoute("GET", "/cache", cache.all_caches, need=READ),
        # issue 15: requests with guardrail findings (a tenant_admin: its own tenant's)
        AdminRoute("GET", "/guardrails/findings", guard.list_findings, PLAIN, READ, OWN),
    ]


def identity_routes(services: Services, tenancy: Tenancy) -> list[AdminRoute]:
    """Issue 14's: admin keys, the audit trail, the credential vault, workspaces."""
    return [
        *admin_key_routes(services, tenancy),
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
        AdminRoute("POST", "/tenants/{tenant_id}/credits", credits.grant, CREATED, BILLING),
        AdminRoute("GET", "/tenants/{tenant_id}/credits", credits.credits, PLAIN, READ, OWN),
        AdminRoute(
            "GET", "/tenants/{tenant_id}/invoice", invoices.tenant_invoice, PLAIN, READ, OWN
        ),
        AdminRoute("GET", "/credits/parked", credit_sync.parked, need=READ),
        AdminRoute(
            "POST", "/credits/parked/{parked_id}/apply", credit_sync.apply_parked, need=BILLING
        ),  # fmt: skip
    ]


def admin_key_routes(services: Services, tenancy: Tenancy) -> list[AdminRoute]:
    """Issue 14's admin keys: the owner's alone."""
    keys = AdminKeyRoutes(services, tenancy)
    return [
        AdminRoute("POST", "/admin-keys", keys.create, CREATED, OWNER),
        AdminRoute("GET", "/admin-keys", keys.list, need=OWNER),
        AdminRoute("DELETE", "/admin-keys/{key_id}", keys.revoke, need=OWNER),
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
    """The admin API under ``/admin/v1``, every operation behind an admin key whose role has
    what the operation needs (``farebox.api.admin.access``), stated in its OpenAPI entry.
    ``ops``: the operations, if already made (the audit trail reads the same table)."""
    api = APIRouter(prefix="/admin/v1", tags=["admin"])
    for op in ops or admin_routes(services, tenancy, exporter, watch):
        options = dict(op.options)
        extra = {**options.pop("openapi_extra", {}), POLICY: policy(op.need, op.tenant_ok)}
        checked = Depends(access(services, op.need, op.tenant_ok))
        api.add_api_route(op.path, op.endpoint, methods=[op.method], openapi_extra=extra,
                          dependencies=[checked, Depends(known_query)], **options)  # fmt: skip
    return api
