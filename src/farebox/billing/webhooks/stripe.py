"""Stripe billing credit grants: ``Stripe-Signature`` verified, credit grant events read.

Signature (docs.stripe.com/webhooks#verify-manually; stripe-python ``WebhookSignature``):
``Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]``, where each ``v1`` is
the lowercase hex HMAC-SHA256, keyed by the endpoint's signing secret (``whsec_...``, used as
is), of ``"<t>.<raw body>"``; ``t`` must be within the tolerance (300 s by default).

Payload (docs.stripe.com/api/events/object, /api/billing/credit-grant/object)::

    {"id": "evt_...", "object": "event", "type": "billing.credit_grant.created",
     "created": 1764547200, "livemode": false,
     "data": {"object": {
        "id": "credgr_...", "object": "billing.credit_grant", "customer": "cus_...",
        "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 1000}},
        "category": "paid" | "promotional", "name": "...", "effective_at": 1764547200,
        "expires_at": null | 1767225600, "voided_at": null | 1764550000, ...}}}

Events: ``billing.credit_grant.created`` and ``billing.credit_grant.updated`` (Stripe has no
separate void event: voiding a grant sends ``.updated`` with ``voided_at`` set, and expiring
it sends ``.updated`` with ``expires_at`` at or before the event). ``value`` is in the
currency's minor unit (cents: ``unit_usd`` ``"0.01"``). Other event types are acknowledged
and ignored. The grant applies at once (``effective_at`` in the future is not waited for).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from farebox.billing.webhooks.base import (
    BadPayload,
    BadSignature,
    check_age,
    header,
    load,
    obj,
    same,
    text,
    unix_or_iso,
)
from farebox.core.inbound import InboundGrant, exact_pico

EVENTS = ("billing.credit_grant.created", "billing.credit_grant.updated")


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: float, tol: float) -> None:
    parts = [p.split("=", 1) for p in header(headers, "Stripe-Signature").split(",")]
    stamps = [v for k, v in (p for p in parts if len(p) == 2) if k.strip() == "t"]
    sigs = [v.strip() for k, v in (p for p in parts if len(p) == 2) if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not sigs:
        raise BadSignature("Stripe-Signature: expected t=<timestamp> and v1=<signature>.")
    signed = stamps[0].strip().encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
    if not any(same(expected, s) for s in sigs):
        raise BadSignature("Stripe-Signature: no v1 signature matches the signing secret.")
    check_age(float(int(stamps[0].strip()[:12])), now, tol)


def parse(headers: Mapping[str, str], body: bytes, unit_usd: str, currency: str) -> InboundGrant:
    event = load(body)
    event_id, event_type = text(event, "id"), text(event, "type")
    if event_type not in EVENTS:
        return InboundGrant("stripe", event_id, event_type, "ignore")
    grant = obj(obj(event, "data"), "object")
    customer = grant.get("customer")
    if isinstance(customer, dict):  # an expanded customer object
        customer = customer.get("id")
    fields: dict[str, Any] = {
        "upstream_id": text(grant, "id"),
        "customer": text({"customer": customer}, "customer"),
        "kind": "promo" if grant.get("category") == "promotional" else "top_up",
        "expires_at": unix_or_iso(grant.get("expires_at"), "expires_at"),
        "note": grant.get("name") if isinstance(grant.get("name"), str) else None,
    }
    fields["amount"], fields["problem"] = _amount(grant, unit_usd, currency)
    created = unix_or_iso(event.get("created"), "created")
    expires = fields["expires_at"]
    ended = grant.get("voided_at") is not None or (
        expires is not None and created is not None and expires <= created
    )
    action = "void" if ended else "grant"
    return InboundGrant("stripe", event_id, event_type, action, **fields)


def _amount(
    grant: Mapping[str, Any], unit_usd: str, currency: str
) -> tuple[int | None, str | None]:
    amount = obj(grant, "amount")
    if amount.get("type") != "monetary":
        return None, f"amount type {str(amount.get('type'))[:32]!r} is not monetary"
    monetary = obj(amount, "monetary")
    value = monetary.get("value")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadPayload("amount.monetary.value: expected an integer (minor units).")
    got = str(monetary.get("currency", ""))[:16]
    if got.lower() != currency.lower():
        return None, f"currency {got!r} is not the configured {currency!r}"
    pico = exact_pico(value, unit_usd)
    return (pico, None) if pico is not None else (None, f"amount {value} is not a positive grant")
