"""What every billing sink shares: the request it asks the caller to send, and the verdict.

A sink is pure: :meth:`Sink.encode` turns events into :class:`Request` objects (path relative
to the sink's base URL, no credentials: the caller adds ``Authorization``), and
:meth:`Sink.classify` turns the HTTP answer into an :class:`Outcome` per event key. The
caller reports a transport error (timeout, refused connection) as status 0.
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from farebox.sinks.events import MeterEvent

_SENSITIVE = frozenset({"authorization", "x-farebox-signature"})
MAX_RETRY_AFTER = 3600.0


class Status(enum.StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # the billing system already had it: counts as delivered
    RETRY = "retry"
    DEAD = "dead"  # permanent: send to the dead-letter list with the reason


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    reason: str = ""
    retry_after: float | None = None  # seconds, when the server said how long to wait

    @property
    def delivered(self) -> bool:
        return self.status in (Status.DELIVERED, Status.DUPLICATE)


DELIVERED = Verdict(Status.DELIVERED)
DUPLICATE = Verdict(Status.DUPLICATE, "already recorded")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keys: tuple[str, ...]  # the event keys this request carries, in body order

    def __repr__(self) -> str:  # never print headers (session tokens, signatures) or bodies
        return f"Request({self.method} {self.path}, {len(self.keys)} events, {len(self.body)} B)"


@dataclass(frozen=True, slots=True)
class Outcome:
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)

    @classmethod
    def every(cls, keys: Iterable[str], verdict: Verdict) -> Outcome:
        return cls({key: verdict for key in keys})

    def merged(self, other: Outcome) -> Outcome:
        return Outcome({**self.verdicts, **other.verdicts})

    def keys(self, *statuses: Status) -> list[str]:
        return [k for k, v in self.verdicts.items() if v.status in statuses]

    @property
    def delivered(self) -> list[str]:
        """Keys the billing system has (newly delivered or duplicates)."""
        return self.keys(Status.DELIVERED, Status.DUPLICATE)

    @property
    def retry(self) -> list[str]:
        return self.keys(Status.RETRY)

    @property
    def dead(self) -> dict[str, str]:
        return {k: v.reason for k, v in self.verdicts.items() if v.status is Status.DEAD}

    @property
    def retry_after(self) -> float | None:
        """The longest wait any retry verdict asked for."""
        waits = [v.retry_after for v in self.verdicts.values() if v.retry_after is not None]
        return max(waits) if waits else None


class Sink(Protocol):
    name: str
    max_batch: int

    def check(self, event: MeterEvent, now: int) -> str | None:
        """Why this sink can never accept the event (a dead reason), or None."""
        ...

    def encode(self, events: Sequence[MeterEvent]) -> list[Request]: ...

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, request: Request
    ) -> Outcome: ...


def screen(sink: Sink, events: Sequence[MeterEvent], now: int) -> tuple[list[MeterEvent], Outcome]:
    """Split events into the sendable ones and an Outcome of client-side ``dead`` verdicts."""
    ok: list[MeterEvent] = []
    dead: dict[str, Verdict] = {}
    for event in events:
        reason = sink.check(event, now)
        if reason is None:
            ok.append(event)
        else:
            dead[event.key] = Verdict(Status.DEAD, reason)
    return ok, Outcome(dead)


def missing_customer(event: MeterEvent, field_name: str) -> str | None:
    if event.customer.get(field_name):
        return None
    return f"tenant has no {field_name}"


def customer_of(event: MeterEvent, field_name: str) -> str:
    """The billing system's id for the event's tenant; ``check`` has refused events without."""
    customer = event.customer.get(field_name)
    if not customer:
        raise ValueError(f"event {event.key}: tenant has no {field_name}")
    return customer


def chunks(events: Sequence[MeterEvent], size: int) -> list[Sequence[MeterEvent]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def json_batches(
    events: Sequence[MeterEvent],
    size: int,
    path: str,
    document: Callable[[Sequence[MeterEvent]], object],
    content_type: str = "application/json",
) -> list[Request]:
    """One ``POST path`` per batch of at most ``size`` events: ``document(batch)`` as JSON."""
    return [
        Request(
            "POST",
            path,
            {"content-type": content_type},
            orjson.dumps(document(batch)),
            tuple(e.key for e in batch),
        )
        for batch in chunks(events, size)
    ]


def lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def retry_after(headers: Mapping[str, str], clock: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``."""
    h = lower(headers)
    if (ms := h.get("retry-after-ms")) is not None:
        try:
            return _clamp(float(ms) / 1000)
        except ValueError:
            pass
    value = h.get("retry-after")
    if value is None:
        return None
    try:
        return _clamp(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return _clamp(when.timestamp() - clock())


def _clamp(seconds: float) -> float | None:
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def transient(status: int, headers: Mapping[str, str]) -> Verdict | None:
    """The common retry rule: transport error (0), 408, 429 and 5xx."""
    if status == 0:
        return Verdict(Status.RETRY, "transport error")
    if status == 408 or status == 429 or status >= 500:
        return Verdict(Status.RETRY, f"HTTP {status}", retry_after(headers))
    return None


def failed(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
    """The common verdict on a failed call: retried when transient, else dead, with the start
    of the answer's body as the reason."""
    return transient(status, headers) or unexpected(status, body[:300].decode("utf-8", "replace"))


def unexpected(status: int, detail: str = "") -> Verdict:
    reason = f"HTTP {status}"
    if status in (401, 403):
        reason += " (check the sink's credentials)"
    if detail:
        reason += f": {detail[:300]}"
    return Verdict(Status.DEAD, reason)
