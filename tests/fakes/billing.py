"""Fake billing systems that enforce the real wire formats (wire-formats.md sections 0-4).

Usage::

    async with StripeFake(api_key="sk_test_x") as stripe:
        ...POST to stripe.root_url + request.path...
        stripe.accepted        # idempotency key -> accepted event (each counted once)
        stripe.duplicates      # Counter of duplicate submissions per key
        stripe.fail(500)       # next answer is a 500
        stripe.throttle(2.5)   # next answer is a 429 with Retry-After: 2.5
        stripe.slow(1.0)       # next answer waits one second
        stripe.failure_rate(0.3, seed=1)  # each request fails with probability 0.3

Every fake answers 401 without ``Authorization: Bearer <api_key>`` when ``api_key`` is set,
validates bodies the way the real service does (or stricter, where noted), records accepted
events keyed by idempotency key and never counts a duplicate twice.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from fakes import FakeUpstream, Recorded, Reply

JSON = dict[str, Any]
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def too_many_digits(value: str) -> bool:
    """Stripe refuses a value of more than 15 significant digits (changelog 2026-04-22)."""
    return len(Decimal(value).normalize().as_tuple().digits) > 15


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("z", "Z")).timestamp()


def media_type(recorded: Recorded) -> str:
    return recorded.headers.get("content-type", "").split(";")[0].strip().lower()


class BillingFake(FakeUpstream):
    """Shared machinery: auth, fault injection, accepted/duplicate bookkeeping."""

    def __init__(self, *, api_key: str | None = None, now: Callable[[], float] = time.time):
        super().__init__()
        self.api_key = api_key
        self.now = now
        self.accepted: dict[str, JSON] = {}
        self.duplicates: Counter[str] = Counter()
        self.rejections: list[tuple[int, Any]] = []  # (status, body) of every 4xx we sent
        self._delays: deque[float] = deque()
        self._random = random.Random(0)
        self._fail_p = 0.0
        self._fail_status = 500

    # -- fault injection -------------------------------------------------------------------

    def fail(self, status: int = 500, times: int = 1, body: Any = None) -> None:
        for _ in range(times):
            self.push(Reply(status=status, body=body or {"error": {"message": "injected"}}))

    def throttle(self, retry_after: float | str = 1, times: int = 1) -> None:
        for _ in range(times):
            self.push(
                Reply(
                    status=429,
                    body={"error": {"type": "rate_limit", "message": "Too many requests"}},
                    headers={"retry-after": str(retry_after)},
                )
            )

    def slow(self, seconds: float, times: int = 1) -> None:
        self._delays.extend([seconds] * times)

    def failure_rate(self, p: float, *, status: int = 500, seed: int = 0) -> None:
        self._fail_p, self._fail_status, self._random = p, status, random.Random(seed)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        delay = self._delays.popleft() if self._delays else 0.0
        if delay:
            try:  # released early when the fake closes, so teardown never waits
                await asyncio.wait_for(self._released.wait(), delay)
            except TimeoutError:
                pass
        return await super()._handle(request)

    # -- routing -----------------------------------------------------------------------------

    def default_reply(self, request: Recorded) -> Reply:
        if not self.authorized(request):
            return self.reject(401, {"error": {"message": "invalid API key"}})
        if self._fail_p and self._random.random() < self._fail_p:
            return Reply(status=self._fail_status, body={"error": {"message": "injected"}})
        return self.route(request)

    def authorized(self, request: Recorded) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def route(self, request: Recorded) -> Reply:
        return super().default_reply(request)

    def reject(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
        self.rejections.append((status, body))
        return Reply(status=status, body=body, headers=dict(headers or {}))

    def record(self, key: str, event: JSON) -> bool:
        """Remember an accepted event; False (and counted) when the key is a duplicate."""
        if key in self.accepted:
            self.duplicates[key] += 1
            return False
        self.accepted[key] = event
        return True


# -- Stripe ----------------------------------------------------------------------------------

STRIPE_TOP_LEVEL = {"event_name", "identifier", "timestamp"}
PAYLOAD_KEY = re.compile(r"^payload\[([^\[\]]+)\]$")
SESSION_TTL = 900


def stripe_error(message: str, param: str | None = None, **extra: Any) -> JSON:
    error: JSON = {"type": "invalid_request_error", "message": message, **extra}
    if param:
        error["param"] = param
    return {"error": error}


class StripeFake(BillingFake):
    """v1 meter events (form-encoded, one per call) and the v2 session + stream.

    Stricter than Stripe in one place, as wire-formats.md allows: v1 checks the timestamp
    window synchronously (400) where Stripe reports it asynchronously. The v2 stream models
    the asynchronous path instead: bad events are answered ``{}`` and listed in
    ``async_errors``. Identifiers are remembered for ``dedup_window`` seconds (24 h).
    """

    def __init__(self, *, dedup_window: float = 86400, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dedup_window = dedup_window
        self.seen_at: dict[str, float] = {}
        self.sessions: dict[str, float] = {}  # token -> expires_at
        self.async_errors: list[tuple[str, str]] = []  # (identifier, Stripe error code)

    def authorized(self, request: Recorded) -> bool:
        if request.path == "/v2/billing/meter_event_stream":
            return True  # the session token is checked by the stream itself
        return super().authorized(request)

    def route(self, request: Recorded) -> Reply:
        if request.method == "POST" and request.path == "/v1/billing/meter_events":
            return self._v1(request)
        if request.method == "POST" and request.path == "/v2/billing/meter_event_session":
            return self._session()
        if request.method == "POST" and request.path == "/v2/billing/meter_event_stream":
            return self._stream(request)
        return self.reject(404, stripe_error(f"Unrecognized request URL ({request.path})"))

    def _window_error(self, timestamp: float) -> str | None:
        now = self.now()
        if timestamp < now - 35 * 86400:
            return "timestamp_too_far_in_past"
        if timestamp > now + 300:
            return "timestamp_in_future"
        return None

    def _duplicate(self, identifier: str) -> bool:
        seen = self.seen_at.get(identifier)
        return seen is not None and self.now() - seen < self.dedup_window

    def _v1(self, request: Recorded) -> Reply:
        if media_type(request) != "application/x-www-form-urlencoded":
            return self.reject(400, stripe_error("Request body must be form-encoded"))
        try:
            pairs = parse_qsl(request.raw.decode(), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return self.reject(400, stripe_error("Invalid form-encoded request body"))
        fields: dict[str, str] = {}
        payload: dict[str, str] = {}
        names: set[str] = set()
        for name, value in pairs:
            if name in names:
                return self.reject(400, stripe_error(f"Duplicate parameter: {name}", name))
            names.add(name)
            if match := PAYLOAD_KEY.match(name):
                payload[match.group(1)] = value
            elif name in STRIPE_TOP_LEVEL:
                fields[name] = value
            else:
                return self.reject(400, stripe_error(f"Received unknown parameter: {name}", name))
        for required in ("event_name",):
            if not fields.get(required):
                return self.reject(
                    400, stripe_error(f"Missing required param: {required}.", required)
                )
        for required in ("stripe_customer_id", "value"):
            if not payload.get(required):
                name = f"payload[{required}]"
                return self.reject(400, stripe_error(f"Missing required param: {name}.", name))
        if not DECIMAL.match(payload["value"]):
            return self.reject(
                400, stripe_error("payload[value] must be a number", "payload[value]")
            )
        if too_many_digits(payload["value"]):  # API 2026-04-22.dahlia
            return self.reject(400, stripe_error(
                f"The value in the event payload can have at most 15 digits. Received "
                f"{payload['value']}.", "payload[value]"))  # fmt: skip
        if len(fields["event_name"]) > 100:
            return self.reject(400, stripe_error("event_name is too long", "event_name"))
        identifier = fields.get("identifier") or f"auto_{uuid.uuid4().hex}"
        if len(identifier) > 100:
            return self.reject(
                400, stripe_error("identifier must be at most 100 characters", "identifier")
            )
        stamp = fields.get("timestamp", str(int(self.now())))
        if not stamp.isdigit():
            return self.reject(400, stripe_error("Invalid integer: " + stamp, "timestamp"))
        if code := self._window_error(int(stamp)):
            return self.reject(
                400, stripe_error(f"timestamp is out of range ({code})", "timestamp")
            )
        if self._duplicate(identifier):
            self.duplicates[identifier] += 1
            return self.reject(
                400,
                stripe_error(f"An event already exists with identifier {identifier}."),
                {"stripe-should-retry": "false"},
            )
        self.seen_at[identifier] = self.now()
        event = {"event_name": fields["event_name"], "payload": payload, "timestamp": int(stamp)}
        self.accepted[identifier] = event
        body = {
            "object": "billing.meter_event",
            "created": int(self.now()),
            "livemode": False,
            "identifier": identifier,
            **event,
        }
        return Reply(status=200, body=body)

    def _session(self) -> Reply:
        token = f"ek_test_{secrets.token_hex(16)}"
        expires = self.now() + SESSION_TTL
        self.sessions[token] = expires

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

        return Reply(
            status=200,
            body={
                "id": f"mes_{uuid.uuid4().hex}",
                "object": "v2.billing.meter_event_session",
                "livemode": False,
                "authentication_token": token,
                "created": iso(self.now()),
                "expires_at": iso(expires),
            },
        )

    def _stream(self, request: Recorded) -> Reply:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        expires = self.sessions.get(token)
        if not auth.startswith("Bearer ") or expires is None or self.now() >= expires:
            error = {
                "type": "temporary_session_expired",
                "code": "billing_meter_event_session_expired",
                "message": "The meter event session has expired. Create a new session.",
            }
            return self.reject(401, {"error": error})
        if media_type(request) != "application/json":
            return self.reject(400, stripe_error("Request body must be JSON"))
        try:
            data = orjson.loads(request.raw)
        except orjson.JSONDecodeError:
            return self.reject(400, stripe_error("Invalid JSON"))
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= 100:
            return self.reject(400, stripe_error("events must hold 1 to 100 events", "events"))
        for event in events:  # validation is asynchronous: the request itself succeeds
            self._stream_event(event)
        return Reply(status=200, body={})

    def _stream_event(self, event: Any) -> None:
        identifier = event.get("identifier") if isinstance(event, dict) else None
        ident = identifier if isinstance(identifier, str) else f"auto_{uuid.uuid4().hex}"
        if not isinstance(event, dict) or not isinstance(event.get("event_name"), str):
            self.async_errors.append((ident, "no_meter"))
            return
        payload = event.get("payload")
        if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
            self.async_errors.append((ident, "meter_event_invalid_value"))
            return
        if not payload.get("stripe_customer_id"):
            self.async_errors.append((ident, "meter_event_no_customer_defined"))
            return
        if not DECIMAL.match(payload.get("value", "")):
            self.async_errors.append((ident, "meter_event_value_not_found"))
            return
        if too_many_digits(payload["value"]):
            self.async_errors.append((ident, "meter_event_value_too_many_digits"))
            return
        stamp = event.get("timestamp")
        if stamp is not None:
            if not isinstance(stamp, str) or not RFC3339.match(stamp):
                self.async_errors.append((ident, "timestamp_invalid"))
                return
            if code := self._window_error(parse_time(stamp)):
                self.async_errors.append((ident, code))
                return
        if len(ident) > 100:
            self.async_errors.append((ident, "identifier_too_long"))
            return
        if self._duplicate(ident):
            self.duplicates[ident] += 1  # dropped silently
            return
        self.seen_at[ident] = self.now()
        self.accepted[ident] = {
            k: event[k] for k in ("event_name", "payload", "timestamp") if k in event
        }


# -- Lago ------------------------------------------------------------------------------------

# components.schemas.EventInputObject from the Lago OpenAPI spec (lago-openapi.yaml), minus
# descriptions and examples; tests/test_sinks.py checks it against the spec file.
LAGO_EVENT_INPUT: JSON = {
    "type": "object",
    "required": ["transaction_id", "external_subscription_id", "code"],
    "properties": {
        "transaction_id": {"type": "string"},
        "external_subscription_id": {"type": "string"},
        "code": {"type": "string"},
        "timestamp": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
        "precise_total_amount_cents": {"type": ["string", "null"]},
        "properties": {
            "type": ["object", "null"],
            "additionalProperties": {
                "oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]
            },
        },
    },
}
LAGO_MAX_BATCH = 100


def _is_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    raise AssertionError(f"unknown JSON type {kind}")


def schema_errors(value: Any, schema: JSON) -> list[str]:
    """The subset of JSON Schema the Lago event schema uses: type, required, properties,
    additionalProperties, oneOf. Errors are Lago-style codes.

    ``oneOf`` is checked as "exactly one branch", as JSON Schema says; note that the spec's
    ``oneOf: [integer, number]`` therefore refuses integer property values under a strict
    validator (an integer is also a number). The sink sends strings, which are unambiguous.
    """
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is_type(value, k) for k in kinds):
            return ["invalid_type"]
    if "oneOf" in schema:
        matches = sum(not schema_errors(value, branch) for branch in schema["oneOf"])
        if matches != 1:
            return ["invalid_type"]
    return []


def lago_event_errors(event: Any) -> dict[str, list[str]]:
    schema = LAGO_EVENT_INPUT
    if not isinstance(event, dict):
        return {"event": ["invalid_type"]}
    errors: dict[str, list[str]] = {}
    for name in schema["required"]:
        if event.get(name) in (None, ""):
            errors[name] = ["value_is_mandatory"]
    for name, value in event.items():
        sub = schema["properties"].get(name)
        if sub is None or name in errors:
            continue  # Rails ignores unpermitted keys
        if problems := schema_errors(value, sub):
            errors[name] = problems
    props = event.get("properties")
    if isinstance(props, dict) and "properties" not in errors:
        item = schema["properties"]["properties"]["additionalProperties"]
        if any(schema_errors(v, item) for v in props.values()):
            errors["properties"] = ["invalid_type"]
    stamp = event.get("timestamp")
    if isinstance(stamp, str) and "timestamp" not in errors:
        try:
            float(stamp)  # Lago does Float(timestamp): ISO strings are refused
        except ValueError:
            errors["timestamp"] = ["invalid_format"]
    return errors


def lago_error(details: JSON) -> JSON:
    return {
        "status": 422,
        "error": "Unprocessable Entity",
        "code": "validation_errors",
        "error_details": details,
    }


class LagoFake(BillingFake):
    """``POST /api/v1/events/batch``. ``store="postgres"``: unique (external_subscription_id,
    transaction_id), a batch is all-or-nothing, errors keyed by index. ``store="clickhouse"``:
    no uniqueness check; the same (transaction_id, timestamp) replaces the earlier event."""

    def __init__(self, *, store: str = "postgres", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert store in ("postgres", "clickhouse")
        self.store = store
        self.unique: set[tuple[str, str]] = set()

    def route(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/api/v1/events/batch":
            return self.reject(404, {"status": 404, "error": "Not Found", "code": "not_found"})
        if media_type(request) != "application/json":
            return self.reject(400, {"status": 400, "error": "Bad request"})
        try:
            data = orjson.loads(request.raw)
        except orjson.JSONDecodeError:
            return self.reject(400, {"status": 400, "error": "Bad request"})
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            return self.reject(422, lago_error({"events": ["value_is_mandatory"]}))
        if not events:
            return self.reject(422, lago_error({"events": ["no_events"]}))
        if len(events) > LAGO_MAX_BATCH:
            return self.reject(422, lago_error({"events": ["too_many_events"]}))
        details: dict[str, JSON] = {}
        in_batch: set[tuple[str, str]] = set()
        for index, event in enumerate(events):
            errors: JSON = dict(lago_event_errors(event))
            if not errors and self.store == "postgres":
                pair = (event["external_subscription_id"], event["transaction_id"])
                if pair in self.unique or pair in in_batch:
                    errors["transaction_id"] = ["value_already_exist"]
                    self.duplicates[event["transaction_id"]] += 1
                in_batch.add(pair)
            if errors:
                details[str(index)] = errors
        if details:  # the whole batch is rolled back
            return self.reject(422, lago_error(details))
        echoed = []
        for event in events:
            key = event["transaction_id"]
            if self.store == "postgres":
                self.unique.add((event["external_subscription_id"], key))
                self.accepted[key] = event
            else:
                previous = self.accepted.get(key)
                if previous is not None and previous.get("timestamp") == event.get("timestamp"):
                    self.duplicates[key] += 1  # replaced, not added
                elif previous is not None:
                    key = f"{key}@{event.get('timestamp')}"  # a different timestamp double-counts
                self.accepted[key] = event
            echoed.append({"lago_id": str(uuid.uuid4()), "lago_customer_id": None, **event})
        return Reply(status=200, body={"events": echoed})


# -- Metronome -------------------------------------------------------------------------------


class MetronomeFake(BillingFake):
    """``POST /v1/ingest`` with a bare array of 1..100 events. Stricter than documented in
    one place (``strict_strings``): property values must be strings, as Metronome advises."""

    def __init__(self, *, strict_strings: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strict_strings = strict_strings

    def route(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/v1/ingest":
            return self.reject(404, {"message": "Not found"})
        if media_type(request) != "application/json":
            return self.reject(400, {"message": "Content-Type must be application/json"})
        try:
            events = orjson.loads(request.raw)
        except orjson.JSONDecodeError:
            return self.reject(400, {"message": "Invalid JSON"})
        if not isinstance(events, list):
            return self.reject(400, {"message": "body must be a JSON array of usage events"})
        if not 1 <= len(events) <= 100:
            return self.reject(400, {"message": f"expected 1 to 100 events, got {len(events)}"})
        for index, event in enumerate(events):
            if problem := self._problem(event):
                return self.reject(400, {"message": f"events[{index}]: {problem}"})
        for event in events:
            self.record(event["transaction_id"], event)  # duplicates: ignored, still 200
        return Reply(status=200, body=b"")

    def _problem(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "not an object"
        tid = event.get("transaction_id")
        if not isinstance(tid, str) or not 1 <= len(tid) <= 128:
            return "transaction_id must be a string of 1..128 characters"
        for name in ("customer_id", "event_type"):
            if not isinstance(event.get(name), str) or not event[name]:
                return f"{name} is required"
        stamp = event.get("timestamp")
        if not isinstance(stamp, str) or not RFC3339.match(stamp):
            return "timestamp must be RFC 3339 with a 4-digit year"
        if parse_time(stamp) > self.now() + 86400:
            return "timestamp is more than 24 hours in the future"
        props = event.get("properties", {})
        if not isinstance(props, dict):
            return "properties must be an object"
        if self.strict_strings and not all(isinstance(v, str) for v in props.values()):
            return "property values must be strings (precision)"
        return None


# -- OpenMeter -------------------------------------------------------------------------------

CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"


def problem(detail: str) -> JSON:
    return {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": detail}


class OpenMeterFake(BillingFake):
    """``POST /api/v1/events`` accepting only ``application/cloudevents-batch+json``, compared
    as an exact string like OpenMeter's handler. Dedup per (source, id); 204 always."""

    def route(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/api/v1/events":
            return self.reject(404, problem("not found"))
        content_type = request.headers.get("content-type", "")
        if content_type != CLOUDEVENTS_BATCH:
            return self.reject(400, problem(f"invalid content type: {content_type}"))
        try:
            events = orjson.loads(request.raw)
        except orjson.JSONDecodeError:
            return self.reject(400, problem("invalid event: malformed JSON"))
        if not isinstance(events, list):
            return self.reject(400, problem("invalid event: a batch must be a JSON array"))
        for event in events:
            if reason := self._problem(event):
                return self.reject(400, problem(f"invalid event: {reason}"))
        for event in events:
            self.record(f"{event['source']}\x00{event['id']}", event)
        return Reply(status=204, body=b"")

    def by_id(self, key: str, source: str = "farebox") -> JSON | None:
        return self.accepted.get(f"{source}\x00{key}")

    @staticmethod
    def _problem(event: Any) -> str | None:
        if not isinstance(event, dict):
            return "not an object"
        if event.get("specversion") != "1.0":
            return "specversion must be 1.0"
        for name in ("id", "source", "type", "subject"):
            if not isinstance(event.get(name), str) or not event[name]:
                return f"{name} is required"
        stamp = event.get("time")
        if stamp is not None and (not isinstance(stamp, str) or not RFC3339.match(stamp)):
            return "time must be RFC 3339"
        data = event.get("data")
        if data is not None and not isinstance(data, dict):
            return "data must be an object"
        return None


# -- Webhook ---------------------------------------------------------------------------------


class WebhookFake(BillingFake):
    """A receiver verifying ``X-Farebox-Signature``; 409 when every event is a duplicate."""

    def __init__(self, secret: bytes, *, path: str = "/hooks/billing", **kwargs: Any):
        super().__init__(**kwargs)
        self.secret = secret
        self.path = path

    def route(self, request: Recorded) -> Reply:
        from farebox.sinks.webhook import verify

        if request.method != "POST" or request.path != self.path:
            return self.reject(404, {"error": "not found"})
        header = request.headers.get("x-farebox-signature", "")
        if not verify(self.secret, header, request.raw, int(self.now())):
            return self.reject(401, {"error": "bad signature"})
        try:
            events = orjson.loads(request.raw)["events"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self.reject(400, {"error": 'expected {"events": [...]}'})
        for event in events:
            if not isinstance(event, dict) or not isinstance(event.get("key"), str):
                return self.reject(400, {"error": "every event needs a key"})
            try:
                Decimal(event["value"])
            except (InvalidOperation, KeyError, TypeError):
                return self.reject(400, {"error": "value must be a decimal string"})
        fresh = [self.record(event["key"], event) for event in events]
        if not any(fresh):
            return self.reject(409, {"error": "already received"})
        return Reply(status=200, body={"received": sum(fresh)})
