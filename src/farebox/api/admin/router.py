"""Admin API (``Authorization: Bearer $FAREBOX_ADMIN_KEY``)."""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin import anomaly as admin_anomaly
from farebox.api.admin.params import TenantFilter
from farebox.api.context import Services
from farebox.billing.exporter import Exporter
from farebox.billing.margins import margins
from farebox.billing.reconcile import reconcile
from farebox.core.keys import hash_key
from farebox.errors import AuthenticationError, InvalidRequest
from farebox.gateway.admission import budget_ident, state_json, validate_budgets
from farebox.gateway.auth import bearer_key
from farebox.gateway.rate_limits import validate_limits
from farebox.gateway.routing_table import policy_json
from farebox.identity.tenancy import (
    TENANT_ID,
    Tenancy,
    key_json,
    tenant_json,
    unsettled_json,
    usage_json,
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _encodable(value: dict[str, Any]) -> dict[str, Any]:
    try:
        if len(orjson.dumps(value)) > 16_384:
            raise ValueError("metadata must encode to at most 16 KiB of JSON")
    except orjson.JSONEncodeError:
        raise ValueError(
            "metadata must be JSON-encodable: integers within 64 bits, nested at most 255 levels"
        ) from None
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_encodable)]
MONTH_PATTERN = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"  # 1970-01 on


def _month(value: str) -> str:
    if not re.fullmatch(MONTH_PATTERN, value):
        raise ValueError(f"must look like 2026-11, a UTC year and month (got {value!r})")
    return value


# The schema states the format; the validator says it in words when it is not met.
Month = Annotated[
    str,
    AfterValidator(_month),
    WithJsonSchema({"type": "string", "pattern": MONTH_PATTERN, "examples": ["2026-11"]}),
]
GroupBy = Literal["tenant", "model", "feature", "user", "day", "hour", "key", "provider", "status"]
BudgetScope = Literal["tenant", "key", "feature", "user"]


class TenantCreate(_Body):
    id: str = Field(min_length=1, max_length=64, pattern=TENANT_ID.pattern)
    name: str | None = Field(None, max_length=256)
    plan: str | None = None
    metadata: Metadata = Field(default_factory=dict)


class BillingIds(_Body):
    stripe_customer_id: str | None = None
    lago_external_subscription_id: str | None = None
    metronome_customer_id: str | None = None
    openmeter_subject: str | None = None


class TenantPatch(_Body):
    name: str | None = Field(None, max_length=256)
    plan: str | None = None
    billing: BillingIds | None = None
    metadata: Metadata | None = None
    budgets: list[dict[str, Any]] | None = Field(None, max_length=100)
    rate_limits: list[dict[str, Any]] | None = Field(None, max_length=100)


class KeyPatch(_Body):
    budgets: list[dict[str, Any]] | None = Field(None, max_length=100)
    rate_limits: list[dict[str, Any]] | None = Field(None, max_length=100)


class BudgetIncrease(_Body):
    scope: BudgetScope = "tenant"
    period: str = "month"
    name: str | None = None
    amount_usd: str = Field(pattern=r"^\s*\d+(\.\d+)?\s*$")
    expires_at: float | None = None
    expires_in_s: float | None = Field(None, gt=0)


class KeyCreate(_Body):
    name: str = Field("default", min_length=1, max_length=128)
    expires_at: float | None = Field(None, description="Unix seconds")
    expires_in_s: float | None = Field(None, gt=0)


class PauseBody(_Body):
    reason: str | None = Field(None, max_length=1000)


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds, an ISO date, or an ISO date-time (UTC when no zone is given)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"'{name}' must be unix seconds or an ISO 8601 date/time (got {value!r}).", param=name
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class DeadLetterRetry(_Body):
    sink: str
    keys: list[str] | None = Field(None, max_length=10_000)


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


def router(
    services: Services, tenancy: Tenancy, exporter: Exporter, watch: AnomalyWatch
) -> APIRouter:
    async def require_admin(request: Request) -> None:
        presented = hash_key(services.secret, bearer_key(request.headers))
        if not hmac.compare_digest(presented, services.admin_key_hash):
            raise AuthenticationError("This endpoint needs the admin key.")

    def expiry(body: KeyCreate) -> float | None:
        if body.expires_in_s is not None:
            return tenancy.now() + body.expires_in_s
        return body.expires_at

    api = APIRouter(
        prefix="/admin/v1",
        dependencies=[Depends(require_admin), Depends(known_query)],
        tags=["admin"],
    )
    default_plan = services.settings.file.default_plan or "default"

    @api.post("/tenants", status_code=201)
    async def create_tenant(body: TenantCreate) -> dict[str, Any]:
        tenant = await tenancy.create_tenant(
            body.id, body.name, body.plan or default_plan, body.metadata
        )
        return tenant_json(tenant)

    @api.get("/tenants")
    async def list_tenants() -> dict[str, Any]:
        tenants = await services.store.list_tenants()
        return {"object": "list", "data": [tenant_json(t) for t in tenants]}

    @api.get("/tenants/{tenant_id}")
    async def get_tenant(tenant_id: str) -> dict[str, Any]:
        return tenant_json(await tenancy.tenant(tenant_id))

    @api.patch("/tenants/{tenant_id}")
    async def patch_tenant(tenant_id: str, body: TenantPatch) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        if "billing" in changes and changes["billing"] is not None:
            changes["billing"] = {k: v for k, v in changes["billing"].items() if v is not None}
        changes = {k: v for k, v in changes.items() if v is not None}
        if "budgets" in changes:
            changes["budgets"] = validate_budgets(changes["budgets"])
        if "rate_limits" in changes:
            changes["rate_limits"] = validate_limits(changes["rate_limits"])
        return tenant_json(await tenancy.update_tenant(tenant_id, changes))

    @api.get("/tenants/{tenant_id}/limits")
    async def tenant_limits(tenant_id: str) -> dict[str, Any]:
        """The plan policy and the rate limits in force: tenant-wide and for each key."""
        tenant = await tenancy.tenant(tenant_id)
        keys = [k for k in await services.store.list_keys(tenant_id, "tenant") if not k.revoked_at]
        gateway = services.gateway
        plan = gateway.plan_name(tenant)
        return {
            "tenant": tenant_id,
            "plan": plan,
            "policy": policy_json(gateway.plans()[plan]),
            "rate_limits": gateway.limits(plan, tenant),
            "keys": [{"id": k.id, "rate_limits": gateway.limits(plan, tenant, k)} for k in keys],
        }

    @api.get("/deployments")
    async def deployments() -> dict[str, Any]:
        return {"object": "list", "data": services.gateway.deployments()}

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        """Prometheus text format: each deployment's breaker state and upstream outcomes."""
        return prometheus(services.gateway.deployments(), await exporter.lag())

    @api.get("/export")
    async def export_status() -> dict[str, Any]:
        """Per billing sink: the cursor, ledger entries waiting, and the export lag."""
        return {"object": "export", "sinks": await exporter.lag()}

    @api.get("/dead-letters")
    async def dead_letters(sink: str | None = None) -> dict[str, Any]:
        if sink is not None and sink not in exporter.sinks:
            known = ", ".join(sorted(exporter.sinks)) or "none configured"
            raise InvalidRequest(f"Unknown billing sink {sink!r} (sinks: {known}).", param="sink")
        return {"object": "list", "data": await services.store.dead_letters(sink)}

    @api.post("/dead-letters/retry")
    async def retry_dead_letters(body: DeadLetterRetry) -> dict[str, Any]:
        if body.sink not in exporter.sinks:
            raise InvalidRequest(f"Unknown billing sink {body.sink!r}.", param="sink")
        result = await exporter.retry_dead(body.sink, body.keys)
        return {"sink": body.sink, "events": result.events, "delivered": result.delivered,
                "dead": result.dead, "complete": result.complete}  # fmt: skip

    @api.get("/margins")
    async def margin_report(month: Month, tenant: TenantFilter = None) -> dict[str, Any]:
        """Per tenant for a UTC month: plan fee plus usage revenue, cost, margin and margin %."""
        file = services.settings.file
        return await margins(services.store, file.plans, default_plan, month, tenant)

    @api.get("/reconciliation")
    async def reconciliation(month: Month, tenant: TenantFilter = None) -> dict[str, Any]:
        return await reconcile(services.store, exporter.runners, month, tenant)

    @api.get("/plans")
    async def plans() -> dict[str, Any]:
        gateway = services.gateway
        return {
            "object": "list",
            "data": [
                {"name": name, "policy": policy_json(plan), "rate_limits": gateway.limits(name)}
                for name, plan in gateway.plans().items()
            ],
        }

    @api.post("/tenants/{tenant_id}/pause")
    async def pause_tenant(tenant_id: str, body: PauseBody | None = None) -> dict[str, Any]:
        reason = body.reason if body else None
        return tenant_json(await tenancy.set_tenant_paused(tenant_id, True, reason))

    @api.post("/tenants/{tenant_id}/resume")
    async def resume_tenant(tenant_id: str) -> dict[str, Any]:
        tenant = await tenancy.set_tenant_paused(tenant_id, False)
        resolved = await watch.resumed(tenant_id)
        return {**tenant_json(tenant), "resolved_incidents": [i.id for i in resolved]}

    @api.get("/tenants/{tenant_id}/budgets")
    async def tenant_budgets(tenant_id: str) -> dict[str, Any]:
        tenant = await tenancy.tenant(tenant_id)
        keys = [k for k in await services.store.list_keys(tenant_id, "tenant") if not k.revoked_at]
        plan = services.gateway.plan_name(tenant)
        states = await services.budgets.tenant_states(tenant, plan, keys)
        return {"object": "list", "data": [state_json(s) for s in states]}

    @api.post("/tenants/{tenant_id}/budget-increases")
    async def increase_budget(tenant_id: str, body: BudgetIncrease) -> dict[str, Any]:
        tenant = await tenancy.tenant(tenant_id)
        until = tenancy.now() + body.expires_in_s if body.expires_in_s else body.expires_at
        plan = services.gateway.plan_name(tenant)
        base = services.budgets.base_budget(tenant, plan, body.scope, body.period, body.name)
        if base is None:
            raise InvalidRequest(
                f"Tenant {tenant_id!r} has no {body.scope} {body.period} budget to increase.",
                param="period",
            )
        raised = {**base, "increase_usd": body.amount_usd.strip(), "increase_until": until}
        wanted = (body.scope, body.period, body.name)
        rest = [b for b in tenant.budgets if budget_ident(b) != wanted]
        budgets = validate_budgets([*rest, raised])
        return tenant_json(await tenancy.update_tenant(tenant_id, {"budgets": budgets}))

    @api.patch("/keys/{key_id}")
    async def patch_key(key_id: str, body: KeyPatch) -> dict[str, Any]:
        await tenancy.key(key_id)
        changes: dict[str, Any] = {}
        if body.budgets is not None:
            changes["budgets"] = validate_budgets(body.budgets)
        if body.rate_limits is not None:
            changes["rate_limits"] = validate_limits(body.rate_limits)
        if not changes:
            raise InvalidRequest("Nothing to change: send budgets and/or rate_limits.")
        return key_json(await services.store.update_key(key_id, changes))

    @api.get("/budget-alerts")
    async def budget_alerts(tenant: TenantFilter = None) -> dict[str, Any]:
        return {"object": "list", "data": await services.store.alerts(tenant)}

    @api.get("/unsettled")
    async def unsettled(tenant: TenantFilter = None) -> dict[str, Any]:
        entries = [e for e in await services.store.ledger(tenant) if e.status == "unsettled"]
        return {"object": "list", "data": [unsettled_json(e) for e in entries]}

    @api.post("/tenants/{tenant_id}/keys", status_code=201)
    async def create_key(tenant_id: str, body: KeyCreate | None = None) -> dict[str, Any]:
        body = body or KeyCreate()
        key, raw = await tenancy.create_key(tenant_id, body.name, expires_at=expiry(body))
        return {**key_json(key), "key": raw}

    @api.get("/tenants/{tenant_id}/keys")
    async def list_keys(tenant_id: str) -> dict[str, Any]:
        await tenancy.tenant(tenant_id)
        keys = await services.store.list_keys(tenant_id, "tenant")
        return {"object": "list", "data": [key_json(k) for k in keys]}

    @api.post("/service-keys", status_code=201)
    async def create_service_key(body: KeyCreate | None = None) -> dict[str, Any]:
        body = body or KeyCreate(name="service")
        key, raw = await tenancy.create_key(
            None, body.name, kind="service", expires_at=expiry(body)
        )
        return {**key_json(key), "key": raw}

    @api.delete("/keys/{key_id}")
    async def revoke_key(key_id: str) -> dict[str, Any]:
        return key_json(await tenancy.revoke_key(key_id))

    @api.post("/keys/{key_id}/pause")
    async def pause_key(key_id: str, body: PauseBody | None = None) -> dict[str, Any]:
        return key_json(await tenancy.set_key_paused(key_id, True, body.reason if body else None))

    @api.post("/keys/{key_id}/resume")
    async def resume_key(key_id: str) -> dict[str, Any]:
        key = await tenancy.set_key_paused(key_id, False)
        resolved = await watch.resumed(key.tenant_id or "", key_id)
        return {**key_json(key), "resolved_incidents": [i.id for i in resolved]}

    admin_anomaly.add_routes(api, watch, services.store)

    @api.get("/usage")
    async def usage(
        tenant: TenantFilter = None,
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
        group_by: GroupBy | None = None,
    ) -> dict[str, Any]:
        rows = await tenancy.usage(
            tenant, parse_time(start, "from"), parse_time(end, "to"), group_by
        )
        return {
            "object": "list",
            "group_by": group_by,
            "data": [usage_json(r, group_by) for r in rows],
        }

    return api


STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


def prometheus(deployments: list[dict[str, Any]], export: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# HELP farebox_deployment_breaker_state Circuit breaker: 0 closed, 1 half-open, 2 open.",
        "# TYPE farebox_deployment_breaker_state gauge",
    ]
    for d in deployments:
        label = _label(d["deployment"])
        lines.append(f'farebox_deployment_breaker_state{{deployment="{label}"}} '
                     f'{STATE_VALUE[d["state"]]}')  # fmt: skip
    lines += [
        "# HELP farebox_deployment_calls_total Upstream calls by outcome (this process).",
        "# TYPE farebox_deployment_calls_total counter",
    ]
    for d in deployments:
        label = _label(d["deployment"])
        for outcome, key in (("ok", "successes"), ("failed", "failures")):
            lines.append(
                f'farebox_deployment_calls_total{{deployment="{label}",outcome="{outcome}"}} '
                f"{d[key]}"
            )
    lines += [
        "# HELP farebox_export_pending_entries Ledger entries not yet exported, per billing sink.",
        "# TYPE farebox_export_pending_entries gauge",
        *(f'farebox_export_pending_entries{{sink="{_label(s)}"}} {v["pending_entries"]}'
          for s, v in export.items()),
        "# HELP farebox_export_lag_seconds Age of the oldest entry not yet exported.",
        "# TYPE farebox_export_lag_seconds gauge",
        *(f'farebox_export_lag_seconds{{sink="{_label(s)}"}} {v["lag_s"]}'
          for s, v in export.items()),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
