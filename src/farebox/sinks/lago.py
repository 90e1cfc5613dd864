"""Lago: ``POST /api/v1/events/batch`` with ``{"events": [EventInputObject, ...]}``, <= 100.

Fields per the Lago OpenAPI ``EventInputObject``: ``transaction_id``,
``external_subscription_id``, ``code`` (required, strings), ``timestamp`` (integer unix
seconds; ISO strings are refused), ``properties`` (values string/integer/number; values are
sent as exact decimal strings so nothing is rounded).

With Lago's Postgres store a batch is all-or-nothing: one duplicate ``transaction_id`` rolls
the whole batch back with HTTP 422 ``validation_errors`` and ``error_details`` keyed by the
event's index, e.g. ``{"3": {"transaction_id": ["value_already_exist"]}}``. :meth:`classify`
marks those indices ``duplicate``, indices with other errors ``dead``, and the rest ``retry``
(to be re-encoded and resent without them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from farebox.sinks.base import (
    DELIVERED,
    DUPLICATE,
    Outcome,
    Request,
    Status,
    Verdict,
    customer_of,
    json_batches,
    lower,
    missing_customer,
    transient,
    unexpected,
)
from farebox.sinks.events import LAGO_SUBSCRIPTION, MeterEvent

ALREADY_EXISTS = "value_already_exist"
RESEND = Verdict(Status.RETRY, "batch rolled back by another event's error: resend")


class Lago:
    name = "lago"

    def __init__(
        self,
        *,
        codes: Mapping[str, str] | None = None,
        value_property: str = "value",
        max_batch: int = 100,
        path: str = "/api/v1/events/batch",
    ) -> None:
        if not 1 <= max_batch <= 100:
            raise ValueError("Lago batches hold 1..100 events")
        self.codes = dict(codes or {})  # meter -> billable metric code; default: the meter
        self.value_property = value_property
        self.max_batch = max_batch
        self.path = path

    def check(self, event: MeterEvent, now: int) -> str | None:
        return missing_customer(event, LAGO_SUBSCRIPTION)

    def wire(self, event: MeterEvent) -> dict[str, Any]:
        return {
            "transaction_id": event.key,
            "external_subscription_id": customer_of(event, LAGO_SUBSCRIPTION),
            "code": self.codes.get(event.meter, event.meter),
            "timestamp": event.timestamp,
            "properties": {**event.properties, self.value_property: event.value},
        }

    def encode(self, events: Sequence[MeterEvent]) -> list[Request]:
        return json_batches(
            events, self.max_batch, self.path, lambda b: {"events": [self.wire(e) for e in b]}
        )

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, request: Request
    ) -> Outcome:
        if 200 <= status < 300:
            return Outcome.every(request.keys, DELIVERED)
        if status == 422:
            details = _error_details(body)
            if details is not None and _by_index(details, len(request.keys)):
                return _partial(details, request.keys)
            return Outcome.every(request.keys, unexpected(status, _short(details, body)))
        if status == 429:
            return Outcome.every(request.keys, _rate_limited(headers))
        if (verdict := transient(status, headers)) is not None:
            return Outcome.every(request.keys, verdict)
        return Outcome.every(request.keys, unexpected(status, _short(None, body)))


def _error_details(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    details = data.get("error_details") if isinstance(data, dict) else None
    return details if isinstance(details, dict) else None


def _by_index(details: Mapping[str, Any], size: int) -> bool:
    return bool(details) and all(k.isdigit() and int(k) < size for k in details)


def _partial(details: Mapping[str, Any], keys: Sequence[str]) -> Outcome:
    verdicts: dict[str, Verdict] = {}
    for index, key in enumerate(keys):
        errors = details.get(str(index))
        if errors is None:
            verdicts[key] = RESEND
        elif _is_duplicate(errors):
            verdicts[key] = DUPLICATE
        else:
            verdicts[key] = Verdict(Status.DEAD, f"HTTP 422: {_short(errors, b'')}")
    return Outcome(verdicts)


def _is_duplicate(errors: Any) -> bool:
    if not isinstance(errors, dict):
        return False
    codes = errors.get("transaction_id")
    return isinstance(codes, list) and ALREADY_EXISTS in codes


def _rate_limited(headers: Mapping[str, str]) -> Verdict:
    verdict = transient(429, headers)
    assert verdict is not None
    if verdict.retry_after is None:
        # Lago Cloud sends x-ratelimit-reset; read it as seconds when it is a small number
        reset = lower(headers).get("x-ratelimit-reset", "")
        try:
            seconds = float(reset)
        except ValueError:
            return verdict
        if 0 <= seconds <= 3600:
            return Verdict(Status.RETRY, verdict.reason, seconds)
    return verdict


def _short(details: Any, body: bytes) -> str:
    if details is not None:
        return orjson.dumps(details).decode()[:300]
    return body[:300].decode("utf-8", "replace")
