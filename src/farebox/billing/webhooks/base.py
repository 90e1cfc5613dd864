"""What every inbound billing webhook shares: the credit service it applies grants through,
the refusal of a bad signature, and careful readers of headers and payloads (a signed payload
is trusted to come from the billing system, never to have the shape we expect).
"""

from __future__ import annotations

import base64
import binascii
import decimal
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from farebox.core.credits import CreditGrant
from farebox.errors import InvalidRequest

MAX_ID = 255  # event and grant ids longer than this are refused, not stored


class CreditGranter(Protocol):
    """The prepaid credit service (``farebox.billing.credits``), as the webhooks use it.

    ``grant``: record a grant of ``amount`` pico-USD of revenue under the idempotency ``key``
    (the same key again returns the first grant and False). ``void``: end the grant under
    ``key`` now, forfeiting what it had left; None when the tenant has no grant by that key."""

    async def grant(
        self,
        tenant_id: str,
        amount: int,
        kind: str,
        key: str,
        expires_at: float | None,
        source: str,
        note: str | None = None,
    ) -> tuple[CreditGrant, bool]: ...

    async def void(self, tenant_id: str, key: str, source: str) -> CreditGrant | None: ...


class BadSignature(InvalidRequest):
    """400: the delivery is not signed by the configured secret (or not recently)."""

    code = "invalid_signature"


class BadPayload(InvalidRequest):
    """400: a correctly signed delivery whose body is not what the billing system sends."""

    code = "invalid_webhook_payload"


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value (names are case-insensitive); ``BadSignature`` when it is missing."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    raise BadSignature(f"The {name} header is missing.")


def same(expected: bytes, presented: str | bytes) -> bool:
    """Constant-time comparison of a computed signature with a presented one."""
    given = presented.encode("latin-1", "replace") if isinstance(presented, str) else presented
    return hmac.compare_digest(expected, given)


def b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def check_age(signed_at: float, now: float, tolerance_s: float) -> None:
    if abs(now - signed_at) > tolerance_s:
        raise BadSignature(
            f"The delivery was signed {int(now - signed_at)} s from now; at most "
            f"{int(tolerance_s)} s is accepted (a replayed or delayed delivery)."
        )


def load(body: bytes) -> dict[str, Any]:
    """The JSON object of a signed body; numbers with a fraction stay exact (``Decimal``)."""
    try:
        data = json.loads(body, parse_float=decimal.Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadPayload("The delivery's body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise BadPayload("The delivery's body is not a JSON object.")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def obj(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise BadPayload(f"{name}: expected an object.")
    return value


def text(data: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID:
        return value
    if value is None and not required:
        return ""
    raise BadPayload(f"{name}: expected a string of 1 to {MAX_ID} characters.")


def number(value: Any) -> str | None:
    """A JSON number or decimal string as a decimal string; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | decimal.Decimal):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def unix_or_iso(value: Any, name: str) -> float | None:
    """A timestamp given as unix seconds or ISO 8601 (``Z`` allowed); None for null."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**11:
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                return parsed.timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    raise BadPayload(f"{name}: expected a timestamp (unix seconds, or ISO 8601 with a zone).")
