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
from farebox.billing.provider_costs import cost_source
from farebox.billing.provider_reconcile import Reconciliation, Thresholds, reconcile_provider
from farebox.config.reconcile import KINDS
from farebox.core.money import parse_usd
from farebox.errors import InvalidRequest
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
        settings = self.services.settings
        provider = settings.file.providers.get(name)
        if provider is None:
            known = ", ".join(sorted(settings.file.providers)) or "none configured"
            raise InvalidRequest(f"Unknown provider {name!r} (providers: {known}).", param="name")
        if provider.kind not in KINDS:
            raise InvalidRequest(
                f"The provider {name!r} is of kind {provider.kind!r}, which has no cost report "
                "API to reconcile with (kinds: openai, anthropic).", param="name"
            )  # fmt: skip
        admin = settings.file.reconcile.providers.get(name)
        key = settings.reconcile_keys.get(name)
        if admin is None or not key:
            raise InvalidRequest(
                f"The provider {name!r} has no admin credentials: set reconcile.providers."
                f'{name}.admin_api_key (e.g. "env:OPENAI_ADMIN_KEY") in the config.', param="name"
            )  # fmt: skip
        source = cost_source(name, provider.kind, self.http, key, admin.base_url, admin.timeout_s)
        served, others = self.models(name)
        cfg = settings.file.reconcile
        limits = Thresholds(
            None if cfg.threshold_usd is None else parse_usd(cfg.threshold_usd.strip()),
            None if cfg.threshold_percent is None else cfg.threshold_percent.strip(),
        )
        return Reconciliation(name, source, served, served & others, limits, cfg.models,
                              self.on_alert)  # fmt: skip

    def models(self, name: str) -> tuple[frozenset[str], frozenset[str]]:
        """The models the deployments of provider ``name`` serve, and those other providers'
        deployments serve."""
        rows = self.services.gateway.deployments()
        mine = frozenset(str(r["model"]) for r in rows if r["provider"] == name)
        others = frozenset(str(r["model"]) for r in rows if r["provider"] != name)
        return mine, others
