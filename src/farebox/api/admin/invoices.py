"""Admin endpoint of the invoice preview: ``GET /admin/v1/tenants/{id}/invoice?month=``, one
tenant's UTC month as lines in exact money (``farebox.billing.invoices``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from farebox.api.admin.billing import Month
from farebox.api.context import Services
from farebox.billing.invoices import invoice


class InvoiceRoutes:
    """The handler of ``/tenants/{tenant_id}/invoice``."""

    def __init__(self, services: Services, clock: Callable[[], float] = time.time) -> None:
        self.services = services
        self.clock = clock
        self.default_plan = services.settings.file.default_plan or "default"

    async def tenant_invoice(self, tenant_id: str, month: Month) -> dict[str, Any]:
        """The invoice preview of a tenant for a UTC month (the current one: month to date):
        the plan fee, the included allowance used, overage by tier, per-request and token
        charges, cache-hit charges and credits burned; the total is the fee plus the month's
        per-request revenue, exactly. A month in the future is a 400."""
        plans = self.services.settings.file.plans
        return await invoice(
            self.services.store, plans, self.default_plan, tenant_id, month, self.clock
        )
