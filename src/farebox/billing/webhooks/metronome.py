"""Metronome commits and credits: ``Metronome-Webhook-Signature`` verified, grants read.

Signature (docs.metronome.com, "Webhooks", verifying notifications): the lowercase hex
HMAC-SHA256, keyed by the webhook's secret, of ``"<Date header>\\n<raw body>"``; the ``Date``
header (RFC 7231) must be within the tolerance (300 s by default).

Payload: Metronome notifications are ``{"id", "type", "properties"?: {...}}`` and system
notifications (``commit.create``, ``commit.edit``, ``commit.archive``, ``credit.create``,
``credit.edit``, ``credit.archive``, segment starts and ends) carry their fields at the top
level instead of under ``properties``; both are read. The commit or credit is the API's
``Commit`` object (docs.metronome.com/api, shared ``Commit``)::

    {"id": "<notification uuid>", "type": "commit.create", "timestamp": "...",
     "customer_id": "<uuid>", "contract_id": "<uuid>",
     "commit": {"id": "<uuid>", "type": "PREPAID", "name": "...",
                "access_schedule": {"credit_type": {"id": "...", "name": "USD (cents)"},
                                    "schedule_items": [{"amount": 10000,
                                                        "starting_at": "...",
                                                        "ending_before": "..."}]}}}

(``credit`` in place of ``commit`` for credits.) The amount is the sum of the access schedule's
items, in the credit type's unit (USD cents: ``unit_usd`` ``"0.01"``); the grant expires at the
last ``ending_before``. A notification without the object's access schedule (a thin one) is
parked for review: Farebox does not call Metronome back. ``*.archive`` voids; ``*.edit`` is
applied like ``*.create`` (once per commit: an edited amount is not re-granted); segment
notifications and other types are acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from farebox.billing.webhooks.base import (
    BadPayload,
    BadSignature,
    check_age,
    header,
    load,
    number,
    same,
    text,
    unix_or_iso,
)
from farebox.core.inbound import InboundGrant, exact_pico

ACTIONS = {"create": "grant", "edit": "grant", "archive": "void"}


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: float, tol: float) -> None:
    date = header(headers, "Date")
    signed = date.encode("latin-1", "replace") + b"\n" + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
    if not same(expected, header(headers, "Metronome-Webhook-Signature").strip().lower()):
        raise BadSignature("Metronome-Webhook-Signature does not match the webhook secret.")
    try:
        signed_at = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise BadSignature("Date: not an HTTP date.") from exc
    check_age(signed_at, now, tol)


def parse(headers: Mapping[str, str], body: bytes, unit_usd: str, currency: str) -> InboundGrant:
    data = load(body)
    event_id, event_type = text(data, "id"), text(data, "type")
    what, _, verb = event_type.partition(".")
    if what not in ("commit", "credit") or verb not in ACTIONS:
        return InboundGrant("metronome", event_id, event_type, "ignore")
    props = data.get("properties")
    fields = props if isinstance(props, dict) else data
    grant = fields.get(what) if isinstance(fields.get(what), dict) else {}
    assert isinstance(grant, dict)
    upstream = text(grant, "id") if "id" in grant else text(fields, f"{what}_id")
    out: dict[str, Any] = {
        "upstream_id": upstream,
        "customer": text(fields, "customer_id"),
        "kind": "top_up" if what == "commit" else "promo",
        "note": grant.get("name") if isinstance(grant.get("name"), str) else None,
    }
    schedule = grant.get("access_schedule")
    if ACTIONS[verb] == "grant":
        if isinstance(schedule, dict):
            out.update(_schedule(schedule, unit_usd, currency))
        else:
            out["problem"] = "the notification carries no access schedule (amount unknown)"
    return InboundGrant("metronome", event_id, event_type, ACTIONS[verb], **out)


def _schedule(schedule: Mapping[str, Any], unit_usd: str, currency: str) -> dict[str, Any]:
    items = schedule.get("schedule_items")
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise BadPayload("access_schedule.schedule_items: expected a list of objects.")
    credit_type = schedule.get("credit_type")
    name = str(credit_type.get("name", "")) if isinstance(credit_type, dict) else ""
    if name and not name.lower().startswith(currency.lower()):
        return {"problem": f"credit type {name[:40]!r} is not the configured {currency!r}"}
    amounts = [number(i.get("amount")) for i in items]
    picos = [exact_pico(a, unit_usd) if a is not None else None for a in amounts]
    ends = [unix_or_iso(i.get("ending_before"), "ending_before") for i in items]
    if any(p is None for p in picos):
        return {"problem": f"amounts {[str(a)[:20] for a in amounts][:5]} are not exact grants"}
    return {
        "amount": sum(p for p in picos if p is not None),
        "expires_at": None
        if any(e is None for e in ends)
        else max(e for e in ends if e is not None),
    }
