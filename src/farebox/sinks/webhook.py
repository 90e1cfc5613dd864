"""A generic signed JSON webhook: ``{"events": [...]}`` POSTed to the configured path
(``""`` when the configured base URL is the whole endpoint).

Signed like the gateway's alert webhooks, which use :func:`signature` from here:
``X-Farebox-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``. The scheme is
restated here because sinks may not import ``farebox.notify.channels`` (it reaches into providers);
a test pins the two together. The signature carries the encode time, so re-encode before a
retry. Answers: 2xx delivered, 409 duplicate, 408/429/5xx retry, other 4xx dead.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from farebox.sinks.base import (
    DELIVERED,
    DUPLICATE,
    Outcome,
    Request,
    chunks,
    failed,
)
from farebox.sinks.events import MeterEvent, event_json

SIGNATURE_HEADER = "x-farebox-signature"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """Receiver side: a valid ``t=..,v1=..`` header for ``body``, no older than ``tolerance``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


class Webhook:
    name = "webhook"

    def __init__(
        self,
        path: str,
        secret: bytes,
        *,
        max_batch: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if path and not path.startswith("/"):
            raise ValueError("webhook path must be empty (the URL itself) or start with '/'")
        if not secret:
            raise ValueError("webhook secret must not be empty")
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        self.path = path
        self.max_batch = max_batch
        self._secret = secret
        self._clock = clock

    def __repr__(self) -> str:
        return f"Webhook({self.path!r})"

    def check(self, event: MeterEvent, now: int) -> str | None:
        return None

    @staticmethod
    def wire(event: MeterEvent) -> dict[str, Any]:
        return event_json(event)

    def encode(self, events: Sequence[MeterEvent]) -> list[Request]:
        requests = []
        for batch in chunks(events, self.max_batch):
            body = orjson.dumps({"events": [self.wire(e) for e in batch]})
            headers = {
                "content-type": "application/json",
                SIGNATURE_HEADER: signature(self._secret, int(self._clock()), body),
            }
            requests.append(Request("POST", self.path, headers, body, tuple(e.key for e in batch)))
        return requests

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, request: Request
    ) -> Outcome:
        if 200 <= status < 300:
            return Outcome.every(request.keys, DELIVERED)
        if status == 409:
            return Outcome.every(request.keys, DUPLICATE)
        return Outcome.every(request.keys, failed(status, headers, body))
