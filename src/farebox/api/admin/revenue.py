"""Admin endpoints of revenue intelligence (issue [13]): ``POST /reprice`` (a what-if: one
plan's month at a proposed price, before and after, changing nothing) and ``GET /upsell``
(refusals for want of money, and how many of those tenants upgraded or topped up)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field, ValidationError

from farebox.api.admin.billing import Month
from farebox.api.admin.errors import validation_failure
from farebox.api.admin.params import AdminBody
from farebox.api.context import Services
from farebox.billing.reprice import reprice
from farebox.billing.upsell import MAX_WINDOW_DAYS, upsell_report
from farebox.identity.tenancy import Tenancy

Decimal = Annotated[str, Field(min_length=1, max_length=40, examples=["3.5"])]


class ResaleBody(AdminBody):
    input: Decimal = "0"  # USD per 1M tokens
    output: Decimal = "0"
    cached_input: Decimal | None = None


class RepriceBody(AdminBody):
    month: Month
    plan: str = Field(min_length=1, max_length=256)
    markup: Decimal | None = None
    resale: ResaleBody | None = None
    per_request: Decimal | None = None  # USD per served request
    monthly_fee_usd: Decimal | None = None  # default: the plan's own


class UpsellParams(BaseModel):
    """``GET /upsell``'s window, for callers whose values come as text (the dashboard)."""

    window_days: int = Field(14, ge=1, le=MAX_WINDOW_DAYS)


def upsell_window(value: str | int | None) -> int:
    """``window_days`` (default 14), refused with the API's own 400 message when invalid."""
    try:
        return UpsellParams.model_validate(
            {} if value is None else {"window_days": value}
        ).window_days
    except ValidationError as exc:
        raise validation_failure(exc.errors()) from None


def reprice_body(fields: Mapping[str, Any]) -> RepriceBody:
    """A ``RepriceBody`` from fields that did not come as JSON (the dashboard's query, a
    GraphQL query's arguments), refused with the API's own 400 message when invalid."""
    try:
        return RepriceBody.model_validate(fields)
    except ValidationError as exc:
        raise validation_failure(exc.errors()) from None


class RevenueRoutes:
    """The handlers of ``/reprice`` and ``/upsell``."""

    def __init__(self, services: Services, tenancy: Tenancy) -> None:
        self.services = services
        self.tenancy = tenancy
        self.default_plan = services.settings.file.default_plan or "default"

    async def what_if(self, body: RepriceBody) -> dict[str, Any]:
        """One plan's tenants, a month replayed at the proposed price (exactly one of
        ``markup``, ``resale``, ``per_request``): revenue and margin before and after.
        Nothing is changed."""
        plans = self.services.settings.file.plans
        proposed = body.model_dump(exclude={"month", "plan"})
        return await reprice(self.services.store, plans, self.default_plan, body.month,
                             body.plan, proposed, self.tenancy.now())  # fmt: skip

    async def upsell(
        self,
        month: Month,
        window_days: Annotated[int, Query(ge=1, le=MAX_WINDOW_DAYS)] = 14,
    ) -> dict[str, Any]:
        """Per plan and per budget for a UTC month: upsell moments (budget and credit
        refusals), tenants refused and converted (a higher-fee plan or a top-up within
        ``window_days``), the conversion rate and the converted tenants' revenue."""
        store = self.services.store
        plans = self.services.settings.file.plans
        return await upsell_report(store, store.upsell, plans, self.default_plan, month,
                                   window_days, self.tenancy.now())  # fmt: skip
