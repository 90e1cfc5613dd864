"""Budget periods: calendar windows in a time zone, rolling windows, lifetime.

A window is identified by its start (unix seconds). Rolling windows are tracked in
buckets, a sixtieth of the window each, so "spend in the last hour" is a sum of buckets.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

CALENDAR = ("day", "week", "month")
ROLLING_BUCKETS = 60
FOREVER = 2.0**53  # "never" as a float timestamp
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PeriodError(ValueError):
    """A period string that cannot be read."""


@dataclass(frozen=True, slots=True)
class Period:
    kind: str  # day | week | month | rolling | lifetime
    seconds: int = 0  # rolling windows only

    @property
    def name(self) -> str:
        return f"rolling:{_format_duration(self.seconds)}" if self.kind == "rolling" else self.kind

    @property
    def bucket_s(self) -> int:
        return max(self.seconds // ROLLING_BUCKETS, 1)


@dataclass(frozen=True, slots=True)
class Window:
    """The slice of time a budget counts spend in. ``buckets_from`` is where a rolling
    window's buckets start (spend in buckets at or after it counts)."""

    start: float
    end: float
    bucket: float  # the counter bucket that new spend goes into
    buckets_from: float


def parse_period(text: str) -> Period:
    if text in CALENDAR or text == "lifetime":
        return Period(text)
    if text.startswith("rolling:"):
        match = _DURATION.match(text[len("rolling:") :])
        if match and int(match.group(1)) > 0:
            return Period("rolling", int(match.group(1)) * _UNIT[match.group(2)])
    raise PeriodError(f"period {text!r}: expected day, week, month, lifetime or rolling:<n>s|m|h|d")


def _format_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _calendar_start(kind: str, local: datetime) -> datetime:
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if kind == "day":
        return day
    if kind == "week":  # weeks start on Monday
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _calendar_next(kind: str, start: datetime) -> datetime:
    if kind == "day":
        naive = start.replace(tzinfo=None) + timedelta(days=1)
    elif kind == "week":
        naive = start.replace(tzinfo=None) + timedelta(days=7)
    elif start.month == 12:
        naive = start.replace(tzinfo=None, year=start.year + 1, month=1)
    else:
        naive = start.replace(tzinfo=None, month=start.month + 1)
    return naive.replace(tzinfo=start.tzinfo)  # wall-clock midnight, whatever the DST offset


def window(period: Period, now: float, zone: ZoneInfo) -> Window:
    """The window containing ``now``."""
    if period.kind == "lifetime":
        return Window(0.0, FOREVER, 0.0, 0.0)
    if period.kind == "rolling":
        size = period.bucket_s
        bucket = float(int(now // size) * size)
        first = bucket - (period.seconds // size - 1) * size
        return Window(first, bucket + size, bucket, first)
    local = datetime.fromtimestamp(math.floor(now), zone)  # boundaries are whole seconds
    start = _calendar_start(period.kind, local)
    end = _calendar_next(period.kind, start)
    return Window(start.timestamp(), end.timestamp(), start.timestamp(), start.timestamp())


class WindowCache:
    """The current window per period, recomputed only when ``now`` leaves it."""

    def __init__(self) -> None:
        self._current: dict[tuple[Period, str], Window] = {}

    def get(self, period: Period, now: float, zone: ZoneInfo) -> Window:
        slot = (period, zone.key)
        found = self._current.get(slot)
        if found is None or not found.bucket <= now < found.end:
            found = self._current[slot] = window(period, now, zone)
        return found


def previous(period: Period, current: Window, zone: ZoneInfo) -> Window | None:
    """The calendar window before ``current`` (for rollover); None for other periods."""
    if period.kind not in CALENDAR:
        return None
    return window(period, current.start - 1.0, zone)


def iso_utc(ts: float) -> str:
    """Unix seconds as the API's ISO form, to the second, in UTC: ``2026-12-06T10:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
