"""OpenMeter entitlement grants: the Svix-style signature verified, grant events read.

Signature (OpenMeter delivers notifications through Svix; the Standard Webhooks scheme,
docs.svix.com/receiving/verifying-payloads/how-manual): headers ``webhook-id``,
``webhook-timestamp`` (unix seconds, within the tolerance) and ``webhook-signature``, a
space-separated list of ``v1,<base64>``; each is the HMAC-SHA256 of
``"<webhook-id>.<webhook-timestamp>.<raw body>"`` keyed by the base64-decoded part of the
secret after ``whsec_``.

Payload: OpenMeter's notification event envelope (openmeter.io/docs/guides/notifications/
event: ``{"id", "type", "timestamp", "data": {"entitlement", "feature", "subject", ...}}``),
with the grant as OpenMeter's ``EntitlementGrant`` object (openmeter.io API reference)::

    {"id": "<event id>", "type": "entitlements.grant.created", "timestamp": "...",
     "data": {"subject": {"key": "customer-1"},
              "entitlement": {"id": "...", "subjectKey": "customer-1", "featureKey": "..."},
              "grant": {"id": "01J...", "entitlementId": "...", "amount": 1000,
                        "priority": 1, "effectiveAt": "...", "expiresAt": "..." | null,
                        "voidedAt": null | "...", "metadata": {"farebox_kind": "promo"}}}}

Types read: ``entitlements.grant.created`` and ``.updated`` (grant; ``voidedAt`` set: void)
and ``entitlements.grant.voided`` (void). OpenMeter's published notification types are the
balance-threshold and reset events; grant events are read in this shape (the envelope of
those, the grant object of its API) for a deployment that forwards them. Others are
acknowledged and ignored. The amount is in the feature's units (``unit_usd`` required);
``metadata.farebox_kind`` may name the kind (``top_up``, ``promo``, ``refund``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from farebox.billing.webhooks.base import (
    BadSignature,
    b64decode,
    check_age,
    header,
    load,
    number,
    obj,
    same,
    text,
    unix_or_iso,
)
from farebox.core.credits import KINDS
from farebox.core.inbound import InboundGrant, exact_pico

EVENTS = {
    "entitlements.grant.created": "grant",
    "entitlements.grant.updated": "grant",
    "entitlements.grant.voided": "void",
}


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: float, tol: float) -> None:
    msg_id = header(headers, "webhook-id")
    stamp = header(headers, "webhook-timestamp").strip()
    if not stamp.isdigit() or len(stamp) > 12:
        raise BadSignature("webhook-timestamp: expected unix seconds.")
    key = b64decode(secret.removeprefix("whsec_")) or secret.encode()
    signed = f"{msg_id}.{stamp}.".encode("latin-1", "replace") + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    presented = [s.partition(",") for s in header(headers, "webhook-signature").split()]
    if not any(v == "v1" and same(expected, sig) for v, _, sig in presented):
        raise BadSignature("webhook-signature: no v1 signature matches the signing secret.")
    check_age(float(stamp), now, tol)


def parse(headers: Mapping[str, str], body: bytes, unit_usd: str, currency: str) -> InboundGrant:
    data = load(body)
    event_id = text(data, "id") if "id" in data else text({"id": _id(headers)}, "id")
    event_type = text(data, "type")
    if event_type not in EVENTS:
        return InboundGrant("openmeter", event_id, event_type, "ignore")
    payload = obj(data, "data")
    grant = obj(payload, "grant")
    meta = grant.get("metadata") if isinstance(grant.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    kind = meta.get("farebox_kind") if meta.get("farebox_kind") in KINDS else "top_up"
    out: dict[str, Any] = {
        "upstream_id": text(grant, "id"),
        "customer": _subject(payload),
        "kind": kind,
        "expires_at": unix_or_iso(grant.get("expiresAt"), "grant.expiresAt"),
    }
    action = EVENTS[event_type]
    if grant.get("voidedAt") is not None:
        action = "void"
    amount = number(grant.get("amount"))
    pico = exact_pico(amount, unit_usd) if amount is not None else None
    if pico is None and action == "grant":
        out["problem"] = f"amount {str(amount)[:40]!r} is not a positive exact grant"
    out["amount"] = pico
    return InboundGrant("openmeter", event_id, event_type, action, **out)


def _id(headers: Mapping[str, str]) -> str:
    return header(headers, "webhook-id")


def _subject(payload: Mapping[str, Any]) -> str:
    subject = payload.get("subject")
    if isinstance(subject, dict) and "key" in subject:
        return text(subject, "key")
    entitlement = payload.get("entitlement")
    if isinstance(entitlement, dict) and "subjectKey" in entitlement:
        return text(entitlement, "subjectKey")
    return text({"subject.key": None}, "subject.key")
