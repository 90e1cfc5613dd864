"""Time zones and moments as a GraphQL query gives them, checked with a clear message."""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from farebox.errors import InvalidRequest

ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}")
MAX_UNIX = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``Europe/Paris``, ``UTC``)."""
    if len(name) <= 64 and ZONE_NAME.fullmatch(name):
        try:
            return ZoneInfo(name)
        except (ValueError, OSError, KeyError):  # not found, a directory, unreadable
            pass
    raise InvalidRequest(
        f"Unknown time zone {name[:64]!r}: give an IANA name such as 'UTC' or 'Europe/Paris'.",
        param="tz",
    )


def moment(value: str, name: str, where: tzinfo) -> float:
    """Unix seconds, or an ISO 8601 date or date-time (in ``where`` when it has no offset)."""
    text = value.strip()
    try:
        ts = float(text)
    except ValueError:
        ts = _iso(text, name, where)
    if not 0 <= ts <= MAX_UNIX:  # also NaN
        raise InvalidRequest(f"'{name}' is out of range (got {value[:64]!r}).", param=name)
    return ts


def _iso(text: str, name: str, where: tzinfo) -> float:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if at.tzinfo is None:
            at = at.replace(tzinfo=where)
        return at.timestamp()
    except (ValueError, OverflowError, OSError):
        raise InvalidRequest(
            f"'{name}' must be unix seconds or an ISO 8601 date/time (got {text[:64]!r}).",
            param=name,
        ) from None


def bucket_start(ts: float, bucket: str, where: tzinfo, start: float) -> float:
    """The start of the bucket holding ``ts``, on the wall clock of ``where``."""
    if bucket == "all":
        return start
    at = datetime.fromtimestamp(ts, where).replace(minute=0, second=0, microsecond=0)
    if bucket in ("day", "month"):
        at = at.replace(hour=0)
    if bucket == "month":
        at = at.replace(day=1)
    return at.timestamp()
