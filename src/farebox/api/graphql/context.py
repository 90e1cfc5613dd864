"""Who is asking, and what a resolver may read: the context every resolver takes its tenant
from. ``tenant`` None is the admin (any tenant); a tenant key's context carries its own tenant
id, set by the server from the key, and every resolver of the tenant schema reads it from here,
never from the query."""

from __future__ import annotations

from dataclasses import dataclass

from strawberry.types import Info

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.context import Services
from farebox.identity.tenancy import Tenancy
from farebox.stores.base import ReportStore


@dataclass(frozen=True)
class GraphContext:
    services: Services
    tenancy: Tenancy
    watch: AnomalyWatch
    tenant: str | None  # None: the admin; otherwise the caller's own tenant, forced

    def reports(self) -> ReportStore:
        """The store's rollups and request log."""
        return self.services.store


def context_of(info: Info[GraphContext, None]) -> GraphContext:
    return info.context
