"""What the HTTP edge is handed: the wired services of one app instance."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from farebox.anomaly.multiplication import MultiplicationWatch
from farebox.api.client_ip import (
    TrustedProxies,
    request_client_ip,
    request_device,
    request_host,
)
from farebox.api.fastpath import Incoming
from farebox.api.responses_stored import StoredResponses
from farebox.billing.webhooks.base import CreditGranter
from farebox.config.settings import Settings
from farebox.gateway.admission import Budgets
from farebox.gateway.auth import Authenticator, Principal
from farebox.gateway.breakers import Breakers
from farebox.gateway.ledger import LedgerWriter
from farebox.gateway.pipeline import Gateway
from farebox.http.client import HttpClient
from farebox.stores.base import CacheStore, Store

if TYPE_CHECKING:  # tracing is optional (``farebox[otel]``)
    from farebox.observe.traces_provider import Tracing


@dataclass
class Services:
    """The services of one app instance. ``principal`` authenticates a data-plane request."""

    settings: Settings
    store: Store  # the whole store: the admin routes read several roles, /readyz pings it
    auth: Authenticator
    gateway: Gateway
    ledger: LedgerWriter
    secret: bytes
    admin_key_hash: str
    started_at: float
    budgets: Budgets
    proxies: TrustedProxies
    breakers: Breakers
    responses: StoredResponses  # the Responses API's stored answers
    # a second admin credential, for this run only: the token a single-process gateway gives
    # the CLI on its own database (cli/owner_api.py); empty: none
    local_admin_hash: str = ""
    tracing: Tracing | None = None  # None: tracing is off
    cache: CacheStore | None = None  # the response cache's entries; None: no cache configured
    # the credit service the billing webhooks grant through in place of budgets.credits
    # (a test's fake); None: the app's own credit book
    credit_granter: CreditGranter | None = None
    http: HttpClient | None = None  # the app's one upstream client (admin APIs of providers)
    on_alert: Callable[[dict[str, Any]], None] | None = None  # the signed alert webhook
    clock: Callable[[], float] = time.time
    # account multiplication (issue 15): who used which tenant's key; None: off
    sightings: MultiplicationWatch | None = None

    def admin_hashes(self) -> tuple[str, ...]:
        """The hashes an admin key may have: the admin key's, and the local CLI's token's."""
        return (self.admin_key_hash, self.local_admin_hash)

    async def principal(self, request: Incoming) -> Principal:
        """Who is calling, with the client IP as the trusted proxies let it be known."""
        ip = request_client_ip(self.proxies, request.scope)
        # the host, only when auth.subdomain may read a tenant from it
        host = request_host(self.proxies, request.scope) if self.auth.uses_host else None
        device = request_device(self.proxies, request.scope)  # from a trusted proxy only
        if self.tracing is None:
            who = await self.auth.authenticate(request.headers, ip, host, device)
        else:
            with self.tracing.stage("authenticate"):
                who = await self.auth.authenticate(request.headers, ip, host, device)
            self.tracing.identify(who.tenant.id, who.key.id)
        if self.sightings is not None:  # the IP and the device: linked, one client
            self.sightings.seen_together(who.counted_clients, who.tenant.id, who.key.id,
                                         who.tenant.plan)  # fmt: skip
        return who
