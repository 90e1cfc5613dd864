"""Fake PagerDuty Events API v2 and Slack incoming webhook, on 127.0.0.1.

Both enforce the wire formats of wire-formats.md sections 5 and 6:

- ``PagerDutyFake``: ``POST /v2/enqueue`` with JSON; no auth header (the ``routing_key`` in
  the body is the credential). A trigger needs ``payload.summary`` (at most 1024 chars),
  ``payload.source`` and ``payload.severity`` (critical|error|warning|info); ``dedup_key`` at
  most 255 chars, required for acknowledge/resolve. 202 ``{"status": "success", ...}`` on
  success, 400 ``{"status": "invalid event", ...}`` otherwise. It keeps alerts by dedup key:
  a resolve closes the open alert of its key (and is dropped when none is open).
- ``SlackFake``: ``POST`` of ``{"text", "blocks"?}`` JSON; 200 with the plain body ``ok``,
  400 ``invalid_payload`` otherwise.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from fakes import FakeUpstream, Recorded, Reply

SEVERITIES = {"critical", "error", "warning", "info"}
ACTIONS = {"trigger", "acknowledge", "resolve"}
TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?(\+0000|Z|[+-]\d{2}:?\d{2})$"
)
TRIGGER_FIELDS = {"routing_key", "event_action", "dedup_key", "client", "client_url", "payload",
                  "links", "images"}  # fmt: skip
PAYLOAD_FIELDS = {"summary", "source", "severity", "timestamp", "component", "group", "class",
                  "custom_details"}  # fmt: skip


def pagerduty_errors(event: Any, routing_key: str) -> list[str]:
    """What the Events API v2 would refuse in ``event`` (empty when it is valid)."""
    if not isinstance(event, dict):
        return ["Event object is invalid"]
    errors = []
    if event.get("routing_key") != routing_key:
        errors.append("'routing_key' is invalid")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is missing or invalid")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve"):
        if dedup is None:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        extra = set(event) - {"routing_key", "event_action", "dedup_key"}
        if extra:
            errors.append(f"unexpected fields for {action}: {sorted(extra)}")
        return errors
    unknown = set(event) - TRIGGER_FIELDS
    if unknown:
        errors.append(f"unknown fields: {sorted(unknown)}")
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return [*errors, "'payload' is missing or invalid"]
    if set(payload) - PAYLOAD_FIELDS:
        errors.append(f"unknown payload fields: {sorted(set(payload) - PAYLOAD_FIELDS)}")
    summary = payload.get("summary")
    if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
        errors.append("'payload.summary' is missing or longer than 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        errors.append("'payload.source' is missing")
    if payload.get("severity") not in SEVERITIES:
        errors.append("'payload.severity' must be critical, error, warning or info")
    if "timestamp" in payload and not TIMESTAMP.match(str(payload["timestamp"])):
        errors.append("'payload.timestamp' is not ISO 8601")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    return errors


class PagerDutyFake(FakeUpstream):
    def __init__(self, routing_key: str) -> None:
        super().__init__()
        self.routing_key = routing_key
        self.events: list[dict[str, Any]] = []  # every accepted event, in order
        self.open: dict[str, dict[str, Any]] = {}  # dedup_key -> the trigger of an open alert
        self.resolved: list[str] = []  # dedup keys whose alert a resolve closed
        self.invalid: list[list[str]] = []

    def default_reply(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/v2/enqueue":
            return Reply(status=404, body={"status": "not found", "message": request.path})
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return self._invalid(["Content-Type must be application/json"])
        try:
            event = orjson.loads(request.raw)
        except orjson.JSONDecodeError:
            return self._invalid(["body is not JSON"])
        errors = pagerduty_errors(event, self.routing_key)
        if errors:
            return self._invalid(errors)
        self.events.append(event)
        key = event.get("dedup_key")
        if event["event_action"] == "trigger":
            self.open.setdefault(key, event)
        elif event["event_action"] == "resolve" and key in self.open:
            del self.open[key]
            self.resolved.append(key)
        body = {"status": "success", "message": "Event processed", "dedup_key": key}
        return Reply(status=202, body=body)

    def _invalid(self, errors: list[str]) -> Reply:
        self.invalid.append(errors)
        body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        return Reply(status=400, body=body)

    def triggers(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_action"] == "trigger"]


class SlackFake(FakeUpstream):
    def __init__(self, path: str = "/services/T000/B000/secret") -> None:
        super().__init__()
        self.path = path
        self.messages: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return self.root_url + self.path

    def default_reply(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != self.path:
            return Reply(status=404, body=b"no_service")
        try:
            message = orjson.loads(request.raw)
        except orjson.JSONDecodeError:
            return Reply(status=400, body=b"invalid_payload")
        text = message.get("text") if isinstance(message, dict) else None
        blocks = message.get("blocks", []) if isinstance(message, dict) else None
        if not isinstance(text, str) or not text or not isinstance(blocks, list):
            return Reply(status=400, body=b"invalid_payload")
        if any(not isinstance(b, dict) or "type" not in b for b in blocks):
            return Reply(status=400, body=b"invalid_blocks")
        self.messages.append(message)
        return Reply(status=200, body=b"ok", headers={"content-type": "text/plain"})
