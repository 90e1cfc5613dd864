"""Admin endpoints of billing: the export to the billing sinks and its dead letters, margins,
reconciliation, usage reports, and ledger entries left unsettled."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import AfterValidator, Field, WithJsonSchema

from farebox.api.admin.params import AdminBody, TenantFilter, parse_time
from farebox.api.context import Services
from farebox.billing.exporter import Exporter
from farebox.billing.margins import margins, workspace_margins
from farebox.billing.profitability import plan_profitability
from farebox.billing.reconcile import reconcile
from farebox.errors import InvalidRequest
from farebox.identity.tenancy import Tenancy, unsettled_json, usage_json

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
GroupBy = Literal[
    "tenant", "model", "feature", "user", "day", "hour", "key", "provider", "status", "workspace"
]


class DeadLetterRetry(AdminBody):
    sink: str
    keys: list[str] | None = Field(None, max_length=10_000)


class BillingRoutes:
    """The handlers of ``/export``, ``/dead-letters``, ``/margins``, ``/reconciliation``,
    ``/usage`` and ``/unsettled``."""

    def __init__(self, services: Services, tenancy: Tenancy, exporter: Exporter) -> None:
        self.services = services
        self.tenancy = tenancy
        self.exporter = exporter
        self.default_plan = services.settings.file.default_plan or "default"

    async def export_status(self) -> dict[str, Any]:
        """Per billing sink: the cursor, ledger entries waiting, and the export lag."""
        return {"object": "export", "sinks": await self.exporter.lag()}

    async def dead_letters(self, sink: str | None = None) -> dict[str, Any]:
        if sink is not None and sink not in self.exporter.sinks:
            known = ", ".join(sorted(self.exporter.sinks)) or "none configured"
            raise InvalidRequest(f"Unknown billing sink {sink!r} (sinks: {known}).", param="sink")
        return {"object": "list", "data": await self.services.store.dead_letters(sink)}

    async def retry_dead_letters(self, body: DeadLetterRetry) -> dict[str, Any]:
        if body.sink not in self.exporter.sinks:
            raise InvalidRequest(f"Unknown billing sink {body.sink!r}.", param="sink")
        result = await self.exporter.retry_dead(body.sink, body.keys)
        return {"sink": body.sink, "events": result.events, "delivered": result.delivered,
                "dead": result.dead, "complete": result.complete}  # fmt: skip

    async def margin_report(
        self,
        month: Month,
        tenant: TenantFilter = None,
        group_by: Literal["workspace"] | None = None,
    ) -> dict[str, Any]:
        """Per tenant for a UTC month: plan fee plus usage revenue, cost, margin and margin %;
        ``group_by=workspace`` (with ``tenant``): and the usage margin of each workspace."""
        if group_by is not None and tenant is None:
            raise InvalidRequest("group_by=workspace needs a tenant: add tenant=.", param="tenant")
        plans = self.services.settings.file.plans
        report = await margins(self.services.store, plans, self.default_plan, month, tenant)
        if group_by is not None and tenant is not None:
            report["workspaces"] = await workspace_margins(self.services.store, month, tenant)
        return report

    async def profitability(self, month: Month) -> dict[str, Any]:
        """Per plan for a UTC month: its tenants' margin percentiles (p10, p50, p90, nearest
        rank), the share with a positive margin, and the 90th-percentile-usage tenant."""
        plans = self.services.settings.file.plans
        return await plan_profitability(self.services.store, plans, self.default_plan, month)

    async def reconciliation(self, month: Month, tenant: TenantFilter = None) -> dict[str, Any]:
        return await reconcile(self.services.store, self.exporter.runners, month, tenant,
                               self.exporter.terms_for)  # fmt: skip

    async def unsettled(self, tenant: TenantFilter = None) -> dict[str, Any]:
        entries = [e for e in await self.services.store.ledger(tenant) if e.status == "unsettled"]
        return {"object": "list", "data": [unsettled_json(e) for e in entries]}

    async def usage(
        self,
        tenant: TenantFilter = None,
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
        group_by: GroupBy | None = None,
    ) -> dict[str, Any]:
        rows = await self.tenancy.usage(
            tenant, parse_time(start, "from"), parse_time(end, "to"), group_by
        )
        return {
            "object": "list",
            "group_by": group_by,
            "data": [usage_json(r, group_by) for r in rows],
        }
