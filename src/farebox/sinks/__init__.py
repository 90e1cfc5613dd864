"""Billing sinks, pure: each turns ``MeterEvent`` objects into ``Request`` objects (no
credentials; the caller adds ``Authorization``) and an HTTP answer into an ``Outcome`` per event
key, for Stripe (v1 and the v2 stream), Lago, Metronome, OpenMeter and the signed webhook;
``base`` holds what they share and ``events`` the event and its idempotency key. An adapter,
independent of providers and stores: it may import http, catalog, errors and core (today it
needs only the standard library and ``orjson``), nothing above them.
"""

from farebox.sinks.base import Outcome, Request, Sink, Status, Verdict, screen
from farebox.sinks.events import MeterEvent, event_key, hour_unit
from farebox.sinks.lago import Lago
from farebox.sinks.metronome import Metronome
from farebox.sinks.openmeter import OpenMeter
from farebox.sinks.stripe import StripeV1, StripeV2Stream, too_old
from farebox.sinks.webhook import Webhook

__all__ = [
    "Lago",
    "MeterEvent",
    "Metronome",
    "OpenMeter",
    "Outcome",
    "Request",
    "Sink",
    "Status",
    "StripeV1",
    "StripeV2Stream",
    "Verdict",
    "Webhook",
    "event_key",
    "hour_unit",
    "screen",
    "too_old",
]
