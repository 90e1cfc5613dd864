"""The unit a billing sink exports: one metered quantity for one tenant at one time.

Keys are deterministic so that a resend after a crash or a timeout is deduplicated by the
billing system instead of billed twice. Every sink's idempotency field fits 100 characters
(Stripe's ``identifier`` limit is the smallest), so :func:`event_key` never exceeds it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_KEY = 100
MAX_DECIMALS = 12  # pico-USD resolution; Stripe is reported to cap values at 12 places
KEY_PREFIX = "fbx"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")
_HASH_LEN = 32  # hex chars of sha256 kept when a key is shortened
_HEAD = 40

# the billing ids a tenant may carry, one per sink
STRIPE_CUSTOMER = "stripe_customer_id"
LAGO_SUBSCRIPTION = "lago_external_subscription_id"
METRONOME_CUSTOMER = "metronome_customer_id"
OPENMETER_SUBJECT = "openmeter_subject"


def _escape(part: str) -> str:
    # percent-encode everything outside [A-Za-z0-9._-], so ":" separates unambiguously and
    # "~" (used only by shortened keys) never appears in a full key
    return _SAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), part)


def event_key(tenant: str, unit: str, meter: str) -> str:
    """``fbx:{tenant}:{unit}:{meter}``; ``unit`` is a request id or an hour (``2026-11-22T10``).

    Parts are escaped, so distinct inputs give distinct keys. A key over 100 characters keeps
    its first 40 and last 26 characters around ``~<32 hex of sha256(full key)>~``: exactly 100
    characters, still deterministic, still readable at both ends.
    """
    full = ":".join((KEY_PREFIX, _escape(tenant), _escape(unit), _escape(meter)))
    if len(full) <= MAX_KEY:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_LEN]
    tail = MAX_KEY - _HEAD - _HASH_LEN - 2
    return f"{full[:_HEAD]}~{digest}~{full[-tail:]}"


def hour_unit(timestamp: int) -> str:
    """The ``unit`` of an hourly aggregate: ``2026-11-22T10`` (UTC)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H")


def rfc3339(timestamp: int) -> str:
    """``2026-11-22T10:00:00Z``: RFC 3339, UTC, four-digit year."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_decimal(text: str) -> bool:
    """An exact plain decimal string (no exponent, no "+", at most 12 decimals)."""
    if not _DECIMAL.match(text):
        return False
    _, _, frac = text.partition(".")
    return len(frac) <= MAX_DECIMALS


def significant_digits(text: str) -> int:
    """The significant digits of a decimal string's value: without the sign, leading zeros
    and trailing zeros (``"0.000120"``: 2; ``"1500.00"``: 2; ``"1234.5"``: 5)."""
    whole, _, frac = text.lstrip("-").partition(".")
    return len((whole + frac).strip("0"))


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """One metered quantity. ``value`` is an exact decimal string such as ``"0.000123"``."""

    key: str
    tenant: str
    customer: Mapping[str, str]
    meter: str
    value: str
    timestamp: int
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.key or len(self.key) > MAX_KEY:
            raise ValueError(f"event key must be 1..{MAX_KEY} characters")
        if not self.meter:
            raise ValueError("event meter must not be empty")
        if not isinstance(self.value, str) or not is_decimal(self.value):
            raise ValueError(f"event value {self.value!r} is not an exact decimal string")
        if isinstance(self.timestamp, bool) or not isinstance(self.timestamp, int):
            raise ValueError("event timestamp must be integer unix seconds")
        if self.timestamp < 0:
            raise ValueError("event timestamp must not be negative")


def event_json(event: MeterEvent) -> dict[str, Any]:
    """An event as plain JSON: what the webhook and Redis sinks send, and dead letters keep."""
    return {
        "key": event.key,
        "tenant": event.tenant,
        "customer": dict(event.customer),
        "meter": event.meter,
        "value": event.value,
        "timestamp": event.timestamp,
        "properties": dict(event.properties),
    }
