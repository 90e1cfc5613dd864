"""Signed fake deliveries from each billing system, as ``tests/test_credit_webhooks.py`` sends
them: Stripe credit grant events, Lago wallet transactions, Metronome commits and credits,
OpenMeter entitlement grants (payload shapes: the sink modules' docstrings), each signed with
that system's scheme; and ``FakeGranter``, an in-memory stand-in for the credit service."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from farebox.core.credits import KINDS, CreditGrant
from farebox.errors import Conflict, InvalidRequest

STRIPE_SECRET = "whsec_test_stripe_0123456789"
LAGO_KEY = "lago-hmac-signature-token"
METRONOME_SECRET = "metronome-webhook-secret"
OPENMETER_KEY = b"openmeter-svix-key-0123456789abc"
OPENMETER_SECRET = "whsec_" + base64.b64encode(OPENMETER_KEY).decode()
ENV = {
    "STRIPE_WH": STRIPE_SECRET,
    "LAGO_WH": LAGO_KEY,
    "METRONOME_WH": METRONOME_SECRET,
    "OPENMETER_WH": OPENMETER_SECRET,
}
CONFIG = {
    "billing": {
        "webhooks": {
            "stripe": {"signing_secret": "env:STRIPE_WH"},
            "lago": {"signing_secret": "env:LAGO_WH"},
            "metronome": {"signing_secret": "env:METRONOME_WH"},
            "openmeter": {"signing_secret": "env:OPENMETER_WH", "unit_usd": "0.001"},
        }
    }
}
# each system's id for the tenant "acme", and the Tenant.billing entry that holds it
CUSTOMERS = {
    "stripe": ("stripe_customer_id", "cus_ACME"),
    "lago": ("lago_external_customer_id", "acme-lago"),
    "metronome": ("metronome_customer_id", "0f8e2a52-8a8b-4c1e-9a0e-5d1c2b3a4f50"),
    "openmeter": ("openmeter_subject", "acme-subject"),
}
PICO_PER_UNIT = {"stripe": 10**10, "lago": 10**12, "metronome": 10**10, "openmeter": 10**9}
EXPIRES = 1_798_761_600  # 2027-01-01T00:00:00Z
EXPIRES_ISO = "2027-01-01T00:00:00Z"


@dataclass
class FakeGranter:
    """The credit service's two methods, in memory: a grant per tenant and key, a void that
    forfeits what the grant had left (nothing burns here, so: all of it)."""

    grants: dict[tuple[str, str], CreditGrant] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    async def grant(
        self, tenant_id: str, amount: int, kind: str, key: str, expires_at: float | None,
        source: str, note: str | None = None,
    ) -> tuple[CreditGrant, bool]:  # fmt: skip
        self.calls.append(("grant", tenant_id, key))
        if amount <= 0 or kind not in KINDS:
            raise InvalidRequest("a grant must be positive")
        found = self.grants.get((tenant_id, key))
        if found is not None:
            if (found.amount, found.kind) != (amount, kind):
                raise Conflict("idempotency key reused for another grant")
            return found, False
        made = CreditGrant(f"cg_{len(self.grants)}", tenant_id, key, kind, amount, 0.0,
                           expires_at, source, note=note)  # fmt: skip
        self.grants[(tenant_id, key)] = made
        return made, True

    async def void(self, tenant_id: str, key: str, source: str) -> CreditGrant | None:
        self.calls.append(("void", tenant_id, key))
        found = self.grants.get((tenant_id, key))
        if found is None:
            return None
        if found.closed_at_burn is None:
            found = dataclasses.replace(found, closed_at_burn=0, forfeited=found.amount)
            self.grants[(tenant_id, key)] = found
        return found

    def balance(self, tenant_id: str) -> int:
        return sum(
            g.amount - (g.forfeited or 0) for (t, _), g in self.grants.items() if t == tenant_id
        )

    def state(self) -> dict[str, tuple[int, int | None, str, str]]:
        return {k: (g.amount, g.forfeited, g.kind, g.source) for (_, k), g in self.grants.items()}


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# -- Stripe -----------------------------------------------------------------------------------
def stripe_sign(
    body: bytes, at: float | None = None, secret: str = STRIPE_SECRET
) -> dict[str, str]:
    t = str(int(time.time() if at is None else at))
    sig = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"}


def stripe_event(
    event_id: str, upstream: str, customer: str, units: int, *, updated: bool = False,
    voided: bool = False, category: str = "paid", currency: str = "usd",
) -> dict[str, Any]:  # fmt: skip
    now = int(time.time())
    grant = {
        "id": upstream, "object": "billing.credit_grant",
        "amount": {"type": "monetary", "monetary": {"currency": currency, "value": units}},
        "applicability_config": {"scope": {"price_type": "metered"}},
        "category": category, "created": now - 60, "customer": customer,
        "effective_at": now - 60, "expires_at": EXPIRES, "livemode": False, "metadata": {},
        "name": "Purchased credits", "test_clock": None, "updated": now,
        "voided_at": now if voided else None,
    }  # fmt: skip
    kind = "updated" if updated or voided else "created"
    return {
        "id": event_id, "object": "event", "api_version": "2025-03-31.basil", "created": now,
        "livemode": False, "pending_webhooks": 1, "type": f"billing.credit_grant.{kind}",
        "request": {"id": None, "idempotency_key": None}, "data": {"object": grant},
    }  # fmt: skip


# -- Lago -------------------------------------------------------------------------------------
def lago_sign(body: bytes, unique_key: str, key: str = LAGO_KEY) -> dict[str, str]:
    sig = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "X-Lago-Signature": sig, "X-Lago-Signature-Algorithm": "hmac",
        "X-Lago-Unique-Key": unique_key, "Content-Type": "application/json",
    }  # fmt: skip


def lago_event(
    upstream: str, customer: str, amount: str, *, updated: bool = False,
    status: str = "settled", transaction_status: str = "purchased", currency: str = "USD",
) -> dict[str, Any]:  # fmt: skip
    wallet = {
        "lago_id": "1a901a90-1a90-1a90-1a90-1a901a901a90",
        "lago_customer_id": "1a901a90-1a90-1a90-1a90-1a901a901a91",
        "external_customer_id": customer, "status": "active", "currency": currency,
        "name": "Prepaid", "rate_amount": "1.0", "credits_balance": amount, "balance": amount,
        "balance_cents": 0, "consumed_credits": "0.0", "created_at": "2026-11-01T00:00:00Z",
        "expiration_at": EXPIRES_ISO, "ongoing_balance_cents": 0,
        "invoice_requires_successful_payment": False, "ongoing_usage_balance_cents": 0,
        "credits_ongoing_balance": amount, "credits_ongoing_usage_balance": "0.0",
    }  # fmt: skip
    tx = {
        "lago_id": upstream, "lago_wallet_id": wallet["lago_id"], "lago_invoice_id": None,
        "lago_credit_note_id": None, "lago_voided_invoice_id": None, "status": status,
        "source": "manual", "transaction_status": transaction_status,
        "transaction_type": "inbound", "credit_amount": amount, "amount": amount,
        "remaining_amount_cents": None, "remaining_credit_amount": None, "priority": 50,
        "invoice_requires_successful_payment": False,
        "settled_at": "2026-12-01T00:00:00Z" if status == "settled" else None,
        "failed_at": None, "created_at": "2026-12-01T00:00:00Z", "metadata": [],
        "name": "Top-up", "payment_method": {"payment_method_type": "manual"}, "wallet": wallet,
    }  # fmt: skip
    return {
        "webhook_type": f"wallet_transaction.{'updated' if updated else 'created'}",
        "object_type": "wallet_transaction",
        "organization_id": "1a901a90-1a90-1a90-1a90-1a901a901a92",
        "wallet_transaction": tx,
    }


# -- Metronome --------------------------------------------------------------------------------
def metronome_sign(
    body: bytes, at: float | None = None, secret: str = METRONOME_SECRET
) -> dict[str, str]:
    date = formatdate(time.time() if at is None else at, usegmt=True)
    sig = hmac.new(secret.encode(), date.encode() + b"\n" + body, hashlib.sha256).hexdigest()
    return {"Date": date, "Metronome-Webhook-Signature": sig, "Content-Type": "application/json"}


def metronome_event(
    event_id: str, upstream: str, customer: str, cents: int, *, verb: str = "create",
    what: str = "commit",
) -> dict[str, Any]:  # fmt: skip
    items = [
        {"id": "seg-1", "amount": cents - cents // 2, "starting_at": "2026-12-01T00:00:00Z",
         "ending_before": "2026-12-15T00:00:00Z"},
        {"id": "seg-2", "amount": cents // 2, "starting_at": "2026-12-15T00:00:00Z",
         "ending_before": EXPIRES_ISO},
    ]  # fmt: skip
    return {
        "id": event_id, "type": f"{what}.{verb}", "timestamp": "2026-12-01T00:00:00Z",
        "customer_id": customer, "contract_id": "7a8b9c0d-0000-4000-8000-000000000001",
        what: {
            "id": upstream, "type": "PREPAID", "name": "Prepaid commit",
            "product": {"id": "prod-1", "name": "AI usage"},
            "access_schedule": {
                "credit_type": {"id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2",
                                "name": "USD (cents)"},
                "schedule_items": items,
            },
        },
    }  # fmt: skip


# -- OpenMeter --------------------------------------------------------------------------------
def openmeter_sign(
    body: bytes, msg_id: str, at: float | None = None, key: bytes = OPENMETER_KEY
) -> dict[str, str]:
    ts = str(int(time.time() if at is None else at))
    signed = f"{msg_id}.{ts}.".encode() + body
    sig = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{sig}",
        "Content-Type": "application/json",
    }  # fmt: skip


def openmeter_event(
    event_id: str, upstream: str, subject: str, units: int, *, kind: str = "created",
    voided: bool = False,
) -> dict[str, Any]:  # fmt: skip
    return {
        "id": event_id, "type": f"entitlements.grant.{kind}",
        "timestamp": "2026-12-01T00:00:00Z",
        "data": {
            "subject": {"key": subject, "id": "01J5WKAM9FJ4621ARR641JS17Q"},
            "feature": {"key": "llm_tokens", "id": "01J5WKAM9FJ4621ARR641JS17R"},
            "entitlement": {"id": "01J5WM25BAXSCBKG2D9NDYJB6S", "subjectKey": subject,
                            "featureKey": "llm_tokens", "type": "metered"},
            "grant": {
                "id": upstream, "entitlementId": "01J5WM25BAXSCBKG2D9NDYJB6S",
                "amount": units, "priority": 1, "effectiveAt": "2026-12-01T00:00:00Z",
                "expiration": {"duration": "MONTH", "count": 1}, "expiresAt": EXPIRES_ISO,
                "voidedAt": "2026-12-02T00:00:00Z" if voided else None,
                "metadata": {},
            },
        },
    }  # fmt: skip


def delivery(sink: str, action: str, event_id: str, upstream: str, customer: str,
             units: int) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """One signed delivery: ``action`` is ``create``, ``update`` or ``void``."""
    if sink == "stripe":
        update, void = action == "update", action == "void"
        event = stripe_event(event_id, upstream, customer, units, updated=update, voided=void)
        body = body_of(event)
        return body, stripe_sign(body)
    if sink == "lago":  # Lago has no void of an inbound transaction
        body = body_of(lago_event(upstream, customer, str(units), updated=action == "update"))
        return body, lago_sign(body, event_id)
    if sink == "metronome":
        verb = {"create": "create", "update": "edit", "void": "archive"}[action]
        body = body_of(metronome_event(event_id, upstream, customer, units, verb=verb))
        return body, metronome_sign(body)
    kind = {"create": "created", "update": "updated", "void": "voided"}[action]
    body = body_of(openmeter_event(event_id, upstream, customer, units, kind=kind))
    return body, openmeter_sign(body, f"msg_{event_id}")
