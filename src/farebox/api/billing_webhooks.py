"""``POST /billing/v1/webhooks/{sink}``: credit grants from the billing system, verified by its
own signature (no admin key: the signature is the credential), bounded like every body.

Grants go through the app's credit book (``Services.budgets.credits``, the service the admin
credits API uses), or ``Services.credit_granter`` when one is set in its place (the tests'
fake). Without either, a verified delivery answers 503 ``credits_unavailable`` and the
billing system retries it.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from farebox.api.context import Services
from farebox.billing.webhooks.base import CreditGranter
from farebox.billing.webhooks.sync import CreditSync
from farebox.core.credits import CreditGrant
from farebox.errors import InvalidRequest


class PrepaidOnly:
    """The credit book, granting only to a tenant whose plan is prepaid: a grant for any other
    is refused (``InvalidRequest``), so the webhook parks it for review instead of keeping
    credits nothing burns (found by the review)."""

    def __init__(self, inner: CreditGranter, services: Services) -> None:
        self._inner = inner
        self._services = services

    async def grant(self, tenant_id: str, amount: int, kind: str, key: str,
                    expires_at: float | None, source: str,
                    note: str | None = None) -> tuple[CreditGrant, bool]:  # fmt: skip
        tenant = await self._services.store.get_tenant(tenant_id)
        plan = self._services.gateway.plan_of(tenant) if tenant is not None else None
        if plan is None or plan.credits is None:
            raise InvalidRequest(
                f"tenant {tenant_id!r} is not on a prepaid plan (pricing.credits): move it to "
                "one, then apply the parked grant"
            )
        return await self._inner.grant(tenant_id, amount, kind, key, expires_at, source, note)

    async def void(self, tenant_id: str, key: str, source: str) -> CreditGrant | None:
        return await self._inner.void(tenant_id, key, source)


def credit_sync(services: Services) -> CreditSync:
    settings = services.settings
    book = services.budgets.credits
    granter = services.credit_granter or (PrepaidOnly(book, services) if book else None)
    return CreditSync(
        settings.file.billing.webhooks,
        settings.sink_secrets,
        services.store.inbox,
        services.store,
        granter,
        time.time,
    )


def router(services: Services) -> APIRouter:
    api = APIRouter(prefix="/billing/v1", tags=["billing webhooks"])

    async def receive_billing_webhook(sink: str, request: Request) -> dict[str, Any]:
        """A billing system's webhook delivery (Stripe credit grants, Lago wallet
        transactions, Metronome commits and credits, OpenMeter entitlement grants)."""
        body = await request.body()
        return await credit_sync(services).receive(sink, dict(request.headers), body)

    api.add_api_route("/webhooks/{sink}", receive_billing_webhook, methods=["POST"])
    return api
