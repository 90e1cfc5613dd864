"""Lago wallet transactions: the HMAC signature verified, settled inbound credits read.

Signature (getlago.com/docs/api-reference/webhooks/format---signature): the endpoint is
created with the ``hmac`` algorithm (``X-Lago-Signature-Algorithm: hmac``); ``X-Lago-Signature``
is the base64 HMAC-SHA256 of the raw body, keyed by the organization's HMAC signature token.
Lago's original ``jwt`` algorithm is refused (400: create the endpoint with ``hmac``). Lago
signs no timestamp: a replay is caught by ``X-Lago-Unique-Key``, the delivery's id.

Payload (the Lago OpenAPI, ``webhooks.wallet_transaction_created`` / ``_updated``;
/work/shared/reference/specs/lago-openapi.yaml, ``WalletTransactionObjectExtended``)::

    {"webhook_type": "wallet_transaction.created" | "wallet_transaction.updated",
     "object_type": "wallet_transaction", "organization_id": "<uuid>",
     "wallet_transaction": {
        "lago_id": "<uuid>", "lago_wallet_id": "<uuid>", "status": "pending|settled|failed",
        "transaction_status": "purchased|granted|voided|invoiced",
        "transaction_type": "inbound|outbound", "amount": "10.0", "credit_amount": "100.0",
        "lago_voided_invoice_id": null, "name": null, "settled_at": "...", ...,
        "wallet": {"external_customer_id": "...", "currency": "USD",
                   "expiration_at": null | "2026-12-31T00:00:00Z", "rate_amount": "0.1", ...}}}

Only a settled inbound transaction grants (its ``amount``, in the wallet's currency; a
``pending`` purchase grants when ``.updated`` says it settled, whichever arrives first);
``granted`` transactions are promotional, those made by voiding an invoice refunds, the rest
top-ups. Outbound transactions (consumption, voided credits) are acknowledged and ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from farebox.billing.webhooks.base import (
    BadPayload,
    BadSignature,
    header,
    load,
    number,
    obj,
    same,
    text,
    unix_or_iso,
)
from farebox.core.inbound import InboundGrant, exact_pico

EVENTS = ("wallet_transaction.created", "wallet_transaction.updated")


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: float, tol: float) -> None:
    algorithm = header(headers, "X-Lago-Signature-Algorithm").strip().lower()
    if algorithm != "hmac":
        raise BadSignature(
            f"X-Lago-Signature-Algorithm {algorithm[:16]!r}: only 'hmac' is accepted "
            "(create the Lago webhook endpoint with the HMAC signature)."
        )
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    if not same(base64.b64encode(digest), header(headers, "X-Lago-Signature").strip()):
        raise BadSignature("X-Lago-Signature does not match the HMAC signature token.")


def parse(headers: Mapping[str, str], body: bytes, unit_usd: str, currency: str) -> InboundGrant:
    data = load(body)
    try:
        event_id = text({"key": header(headers, "X-Lago-Unique-Key")}, "key")
    except BadSignature as exc:
        raise BadPayload("The X-Lago-Unique-Key header is missing.") from exc
    event_type = text(data, "webhook_type")
    if event_type not in EVENTS:
        return InboundGrant("lago", event_id, event_type, "ignore")
    tx = obj(data, "wallet_transaction")
    upstream = text(tx, "lago_id")
    if tx.get("transaction_type") != "inbound" or tx.get("status") != "settled":
        return InboundGrant("lago", event_id, event_type, "ignore", upstream_id=upstream)
    wallet = obj(tx, "wallet")
    status = tx.get("transaction_status")
    kind = "refund" if tx.get("lago_voided_invoice_id") else "top_up"
    fields: dict[str, Any] = {
        "upstream_id": upstream,
        "customer": text(wallet, "external_customer_id"),
        "kind": "promo" if status == "granted" and kind == "top_up" else kind,
        "expires_at": unix_or_iso(wallet.get("expiration_at"), "wallet.expiration_at"),
        "note": tx.get("name") if isinstance(tx.get("name"), str) else None,
    }
    amount = number(tx.get("amount"))
    got = str(wallet.get("currency", ""))[:16]
    if got.lower() != currency.lower():
        fields["problem"] = f"currency {got!r} is not the configured {currency!r}"
    elif amount is None or (pico := exact_pico(amount, unit_usd)) is None:
        fields["problem"] = f"amount {str(amount)[:40]!r} is not a positive exact grant"
    else:
        fields["amount"] = pico
    return InboundGrant("lago", event_id, event_type, "grant", **fields)
