"""Stripe Billing meter events: v1 (one form-encoded event per call) and the v2 stream.

v1: ``POST /v1/billing/meter_events`` on ``https://api.stripe.com``. A duplicate
``identifier`` answers HTTP 400 "An event already exists with identifier ..." with
``stripe-should-retry: false``; that counts as delivered. No ``Idempotency-Key`` header is
set on purpose: v1 replays the first result for a key, including a 5xx, for 24 h, so reusing
the identifier as that key would turn one outage into a day of failed retries.

v2: ``POST /v2/billing/meter_event_session`` (api.stripe.com, secret key) returns a token
valid for 15 minutes; ``POST /v2/billing/meter_event_stream`` (meter-events.stripe.com,
``Bearer <token>``) takes up to 100 JSON events, validated asynchronously.

Both reject timestamps older than 35 days or more than 5 minutes ahead; :func:`too_old`
applies that rule before sending so such events go dead with a clear reason. Both reject a
value of more than 15 significant digits (API 2026-04-22.dahlia: v1 with a 400, the v2
stream asynchronously, ``meter_event_value_too_many_digits``, where the exporter would never
hear of it): such an event goes dead before sending, with the rule as its reason (an hourly
money aggregate of pico-USD precision can reach it; per-request events rarely do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import urlencode

import orjson

from farebox.sinks.base import (
    DELIVERED,
    DUPLICATE,
    Outcome,
    Request,
    Status,
    Verdict,
    chunks,
    customer_of,
    lower,
    missing_customer,
    retry_after,
    transient,
    unexpected,
)
from farebox.sinks.events import (
    MAX_KEY,
    STRIPE_CUSTOMER,
    MeterEvent,
    rfc3339,
    significant_digits,
)

API_BASE = "https://api.stripe.com"
METER_EVENTS_BASE = "https://meter-events.stripe.com"
MAX_AGE = 35 * 86400
MAX_AHEAD = 300
MAX_DIGITS = 15  # significant digits of a value (changelog 2026-04-22.dahlia)
SESSION_EXPIRED = "stripe meter event session expired: create a new session"


def too_old(event: MeterEvent, now: int) -> bool:
    """True when Stripe would refuse the timestamp: > 35 days old or > 5 minutes ahead."""
    return now - event.timestamp > MAX_AGE or event.timestamp - now > MAX_AHEAD


def _error_message(body: bytes) -> tuple[str, str]:
    """(type or code, message) from a Stripe v1/v2 error body; empty strings if unreadable."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return "", body[:200].decode("utf-8", "replace")
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "", ""
    kind = error.get("code") or error.get("type") or ""
    message = error.get("message") or ""
    return str(kind), str(message)


class _StripeBase:
    max_batch: int

    def __init__(
        self,
        event_names: Mapping[str, str],
        *,
        customer_key: str = "stripe_customer_id",
        value_key: str = "value",
        dimensions: Sequence[str] = (),
        stripe_version: str | None = None,
    ) -> None:
        self.event_names = dict(event_names)
        self.customer_key = customer_key  # the meter's customer_mapping.event_payload_key
        self.value_key = value_key  # the meter's value_settings.event_payload_key
        self.dimensions = tuple(dimensions)  # properties forwarded as payload keys
        self.stripe_version = stripe_version

    def check(self, event: MeterEvent, now: int) -> str | None:
        if (reason := missing_customer(event, STRIPE_CUSTOMER)) is not None:
            return reason
        if event.meter not in self.event_names:
            return f"no Stripe event_name configured for meter {event.meter!r}"
        if len(event.key) > MAX_KEY:
            return f"identifier longer than {MAX_KEY} characters"
        if (digits := significant_digits(event.value)) > MAX_DIGITS:
            return (
                f"value {event.value} has {digits} significant digits; Stripe takes at most "
                f"{MAX_DIGITS} (send this meter per request, not per hour)"
            )
        if too_old(event, now):
            return (
                f"timestamp {event.timestamp} is outside Stripe's 35-day window "
                "(at most 35 days old, at most 5 minutes ahead)"
            )
        return None

    def _payload(self, event: MeterEvent) -> dict[str, str]:
        customer = customer_of(event, STRIPE_CUSTOMER)
        payload = {self.customer_key: customer, self.value_key: event.value}
        for name in self.dimensions:
            if name in event.properties:
                payload[name] = event.properties[name]
        return payload

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"content-type": content_type}
        if self.stripe_version:
            headers["stripe-version"] = self.stripe_version
        return headers

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, request: Request
    ) -> Outcome:
        return Outcome.every(request.keys, self._verdict(status, headers, body))

    def _verdict(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        raise NotImplementedError  # each API answers in its own way


class StripeV1(_StripeBase):
    """One event per request; serialize per (customer, meter): Stripe allows one at a time."""

    name = "stripe"
    max_batch = 1

    def encode(self, events: Sequence[MeterEvent]) -> list[Request]:
        requests = []
        for event in events:
            fields = [
                ("event_name", self.event_names[event.meter]),
                ("identifier", event.key),
                ("timestamp", str(event.timestamp)),
            ]
            fields += [(f"payload[{k}]", v) for k, v in self._payload(event).items()]
            body = urlencode(fields).encode()
            headers = self._headers("application/x-www-form-urlencoded")
            requests.append(
                Request("POST", "/v1/billing/meter_events", headers, body, (event.key,))
            )
        return requests

    def _verdict(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        if 200 <= status < 300:
            return DELIVERED
        kind, message = _error_message(body)
        if status == 400 and is_duplicate_message(message):
            return DUPLICATE
        should_retry = lower(headers).get("stripe-should-retry")
        if should_retry == "true":
            return Verdict(Status.RETRY, f"HTTP {status}", retry_after(headers))
        if should_retry == "false" and status != 0:
            return Verdict(Status.DEAD, f"HTTP {status}, Stripe says do not retry: {message}")
        if status == 409:  # idempotency conflict: a concurrent request with the same key
            return Verdict(Status.RETRY, "HTTP 409", retry_after(headers))
        if (verdict := transient(status, headers)) is not None:
            return verdict
        return unexpected(status, f"{kind}: {message}" if kind else message)


def is_duplicate_message(message: str) -> bool:
    """Stripe's duplicate-identifier message: "An event already exists with identifier X."."""
    text = message.lower()
    return "already exists" in text and "identifier" in text


class StripeV2Stream(_StripeBase):
    """Batches of up to 100 on the v2 stream; paths are relative to METER_EVENTS_BASE,
    except :meth:`session_request`, which goes to API_BASE with the secret key."""

    name = "stripe_v2"
    max_batch = 100

    def session_request(self) -> Request:
        headers = self._headers("application/json")
        return Request("POST", "/v2/billing/meter_event_session", headers, b"{}", ())

    @staticmethod
    def parse_session(body: bytes) -> tuple[str, int]:
        """(authentication_token, expires_at as unix seconds) from the session answer."""
        data = orjson.loads(body)
        token = data["authentication_token"]
        expires = datetime.fromisoformat(data["expires_at"])
        if not isinstance(token, str) or not token:
            raise ValueError("session answer has no authentication_token")
        return token, int(expires.timestamp())

    def encode(self, events: Sequence[MeterEvent], *, token: str | None = None) -> list[Request]:
        if not token:
            raise ValueError("the v2 stream needs a session token (see session_request)")
        requests = []
        for batch in chunks(events, self.max_batch):
            wire = [
                {
                    "event_name": self.event_names[event.meter],
                    "identifier": event.key,
                    "timestamp": rfc3339(event.timestamp),
                    "payload": self._payload(event),
                }
                for event in batch
            ]
            headers = self._headers("application/json")
            headers["authorization"] = f"Bearer {token}"
            body = orjson.dumps({"events": wire})
            keys = tuple(e.key for e in batch)
            requests.append(Request("POST", "/v2/billing/meter_event_stream", headers, body, keys))
        return requests

    def _verdict(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        if 200 <= status < 300:  # duplicates are dropped silently; validation is async
            return DELIVERED
        kind, message = _error_message(body)
        if status == 401:  # billing_meter_event_session_expired, or a bad token
            return Verdict(Status.RETRY, SESSION_EXPIRED)
        if (verdict := transient(status, headers)) is not None:
            return verdict
        return unexpected(status, f"{kind}: {message}" if kind else message)

    @staticmethod
    def session_expired(outcome: Outcome) -> bool:
        return any(v.reason == SESSION_EXPIRED for v in outcome.verdicts.values())
