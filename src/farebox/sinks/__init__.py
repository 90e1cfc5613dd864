"""Billing sinks: pure encoders/classifiers for Stripe, Lago, Metronome, OpenMeter, webhooks.

Each sink turns :class:`MeterEvent` objects into :class:`Request` objects (no credentials;
the caller adds ``Authorization``) and an HTTP answer into an :class:`Outcome` per event key.
This package imports only the standard library, ``orjson`` and ``farebox.core``/``errors``.
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
