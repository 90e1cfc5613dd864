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
from farebox.billing.webhooks.sync import CreditSync


def credit_sync(services: Services) -> CreditSync:
    settings = services.settings
    return CreditSync(
        settings.file.billing.webhooks,
        settings.sink_secrets,
        services.store.inbox,
        services.store,
        services.credit_granter or services.budgets.credits,
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
