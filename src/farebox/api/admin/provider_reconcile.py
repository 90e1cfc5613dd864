"""``GET /admin/v1/providers/{name}/reconcile?month=``: a provider's own cost report (its
admin API, with the admin key from ``reconcile.providers``) against the ledger's cost of its
deployments, per UTC day and model (``billing.provider_reconcile``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Path

from farebox.api.admin.billing import Month
from farebox.api.context import Services
from farebox.billing.provider_reconcile import Reconciliation, reconcile_provider
from farebox.billing.provider_watch import reconciliation
from farebox.http.client import HttpClient

ProviderName = Annotated[str, Path(min_length=1, max_length=128)]


class ProviderReconcileRoutes:
    """The handler of ``/providers/{name}/reconcile``."""

    def __init__(
        self,
        services: Services,
        http: HttpClient | None = None,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self.http = http or HttpClient()
        self.on_alert = on_alert
        self.clock = clock

    async def provider_reconcile(self, name: ProviderName, month: Month) -> dict[str, Any]:
        """Per UTC day and model of ``month``: the ledger's cost of the provider's
        deployments, the provider's own reported cost, and the difference (provider minus
        ledger), as exact decimal strings; a signed ``provider.cost_mismatch`` alert, once,
        for each day and model past the configured threshold."""
        job = self.job(name)
        return await reconcile_provider(self.services.store, job, month, self.clock())

    def job(self, name: str) -> Reconciliation:
        """What to compare for provider ``name``, or a 400 that says what is missing."""
        deployments = self.services.gateway.deployments()
        return reconciliation(self.services.settings, name, deployments, self.http, self.on_alert)
