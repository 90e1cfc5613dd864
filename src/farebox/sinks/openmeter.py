"""OpenMeter: CloudEvents 1.0 batch to ``POST /api/v1/events``.

``Content-Type`` must be exactly ``application/cloudevents-batch+json`` (OpenMeter compares
the string; a ``; charset=`` parameter is refused with 400). Each event: ``specversion``
"1.0", ``id`` (the idempotency key; dedup is per (``source``, ``id``)), ``source`` (keep it
constant per deployment), ``type`` (the meter), ``subject``, ``time`` (RFC 3339), ``data``
(``value`` plus the properties, all strings). Success, duplicates included, is 204.
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
from farebox.sinks.events import OPENMETER_SUBJECT, MeterEvent, rfc3339

CONTENT_TYPE = "application/cloudevents-batch+json"


class OpenMeter:
    name = "openmeter"

    def __init__(
        self,
        *,
        source: str = "farebox",
        types: Mapping[str, str] | None = None,
        max_batch: int = 100,
    ) -> None:
        if not source:
            raise ValueError("a CloudEvents source must not be empty")
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        self.source = source
        self.types = dict(types or {})  # meter -> CloudEvents type; default: the meter
        self.max_batch = max_batch

    def check(self, event: MeterEvent, now: int) -> str | None:
        return missing_customer(event, OPENMETER_SUBJECT)

    def wire(self, event: MeterEvent) -> dict[str, Any]:
        subject = customer_of(event, OPENMETER_SUBJECT)
        return {
            "specversion": "1.0",
            "id": event.key,
            "source": self.source,
            "type": self.types.get(event.meter, event.meter),
            "subject": subject,
            "time": rfc3339(event.timestamp),
            "datacontenttype": "application/json",
            "data": {**event.properties, "value": event.value},
        }

    def encode(self, events: Sequence[MeterEvent]) -> list[Request]:
        return json_batches(
            events,
            self.max_batch,
            "/api/v1/events",
            lambda batch: [self.wire(e) for e in batch],
            CONTENT_TYPE,
        )

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, request: Request
    ) -> Outcome:
        if 200 <= status < 300:  # 204; duplicates are dropped silently
            return Outcome.every(request.keys, DELIVERED)
        return Outcome.every(request.keys, failed(status, headers, body))
