"""Metronome: ``POST /v1/ingest`` with a bare JSON array of 1..100 usage events.

Each event: ``transaction_id`` (1..128 chars, deduplicated for 34 days), ``customer_id``
(a Metronome customer id or ingest alias), ``event_type``, ``timestamp`` (RFC 3339, 4-digit
year), ``properties`` (values sent as strings, as Metronome advises, to keep precision).
Duplicates are ignored silently with a 2xx. Events may be backdated 34 days and may not be
more than 24 h ahead. The ingest error body is undocumented: any other 4xx is permanent for
the whole batch; 429/5xx/transport errors are retried (safe: ``transaction_id`` dedups).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from farebox.sinks.base import (
    DELIVERED,
    Outcome,
    Request,
    customer_of,
    failed,
    json_batches,
    missing_customer,
)
from farebox.sinks.events import METRONOME_CUSTOMER, MeterEvent, rfc3339

MAX_AGE = 34 * 86400
MAX_AHEAD = 86400


class Metronome:
    name = "metronome"

    def __init__(
        self,
        *,
        event_types: Mapping[str, str] | None = None,
        value_property: str = "value",
        max_batch: int = 100,
    ) -> None:
        if not 1 <= max_batch <= 100:
            raise ValueError("Metronome batches hold 1..100 events")
        self.event_types = dict(event_types or {})  # meter -> event_type; default: the meter
        self.value_property = value_property
        self.max_batch = max_batch

    def check(self, event: MeterEvent, now: int) -> str | None:
        if (reason := missing_customer(event, METRONOME_CUSTOMER)) is not None:
            return reason
        if now - event.timestamp > MAX_AGE or event.timestamp - now > MAX_AHEAD:
            return (
                f"timestamp {event.timestamp} is outside Metronome's window "
                "(at most 34 days old, at most 24 hours ahead)"
            )
        return None

    def wire(self, event: MeterEvent) -> dict[str, Any]:
        return {
            "transaction_id": event.key,
            "customer_id": customer_of(event, METRONOME_CUSTOMER),
            "event_type": self.event_types.get(event.meter, event.meter),
            "timestamp": rfc3339(event.timestamp),
            "properties": {**event.properties, self.value_property: event.value},
        }

    def encode(self, events: Sequence[MeterEvent]) -> list[Request]:
        return json_batches(
            events, self.max_batch, "/v1/ingest", lambda batch: [self.wire(e) for e in batch]
        )

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, request: Request
    ) -> Outcome:
        if 200 <= status < 300:  # includes duplicates, which Metronome ignores silently
            return Outcome.every(request.keys, DELIVERED)
        return Outcome.every(request.keys, failed(status, headers, body))
