"""Billing sinks: encode -> real loopback HTTP to a format-enforcing fake -> classify."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakes.billing import (
    CLOUDEVENTS_BATCH,
    LAGO_EVENT_INPUT,
    LagoFake,
    MetronomeFake,
    OpenMeterFake,
    StripeFake,
    WebhookFake,
    lago_event_errors,
)
from farebox.sinks import (
    Lago,
    MeterEvent,
    Metronome,
    OpenMeter,
    Outcome,
    Request,
    Sink,
    Status,
    StripeV1,
    StripeV2Stream,
    Webhook,
    event_key,
    hour_unit,
    screen,
    too_old,
)
from farebox.sinks.webhook import signature, verify

NOW = int(time.time())
API_KEY = "test_key_not_a_secret"
CUSTOMER = {
    "stripe_customer_id": "cus_ABC",
    "lago_external_subscription_id": "sub_t1",
    "metronome_customer_id": "tenant-1@acme",
    "openmeter_subject": "tenant-1",
}
METERS = ("input_tokens", "output_tokens", "cost_usd")
EVENT_NAMES = {meter: f"fbx_{meter}" for meter in METERS}
SPEC = Path(__file__).resolve().parents[2] / "shared/reference/specs/lago-openapi.yaml"


def event(
    n: int = 0,
    *,
    meter: str = "input_tokens",
    value: str = "1532",
    timestamp: int = NOW - 60,
    customer: dict[str, str] | None = None,
    tenant: str = "t1",
) -> MeterEvent:
    return MeterEvent(
        key=event_key(tenant, f"req_{n:05d}", meter),
        tenant=tenant,
        customer=CUSTOMER if customer is None else customer,
        meter=meter,
        value=value,
        timestamp=timestamp,
        properties={"model": "gpt-4.1", "feature": "chat"},
    )


def many(count: int, **kwargs: Any) -> list[MeterEvent]:
    return [event(n, **kwargs) for n in range(count)]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=2.0) as client:
        yield client


async def send(
    http: httpx.AsyncClient, base: str, sink: Sink, request: Request, deadline: float = 2.0
) -> Outcome:
    """What the exporter does: POST, and report a transport error as status 0."""
    try:
        r = await http.request(
            request.method,
            base + request.path,
            headers=request.headers,
            content=request.body,
            timeout=deadline,
        )
    except httpx.TransportError:
        return sink.classify(0, {}, b"", request)
    return sink.classify(r.status_code, r.headers, r.content, request)


async def send_all(
    http: httpx.AsyncClient, base: str, sink: Sink, events: Sequence[MeterEvent]
) -> Outcome:
    outcome = Outcome()
    for request in sink.encode(events):
        outcome = outcome.merged(await send(http, base, sink, request))
    return outcome


async def raw_post(
    http: httpx.AsyncClient, url: str, body: bytes, content_type: str
) -> httpx.Response:
    return await http.post(url, content=body, headers={"content-type": content_type})


def all_status(outcome: Outcome, status: Status) -> bool:
    return bool(outcome.verdicts) and all(v.status is status for v in outcome.verdicts.values())


# -- keys and events -------------------------------------------------------------------------


def test_event_key_shape() -> None:
    assert event_key("t1", "req_8f2", "input_tokens") == "fbx:t1:req_8f2:input_tokens"
    assert event_key("t1", hour_unit(1763805600), "cost_usd") == "fbx:t1:2025-11-22T10:cost_usd"
    # separators in parts are escaped, so they cannot make two inputs collide
    assert event_key("a", "b:c", "m") != event_key("a:b", "c", "m")
    long = event_key("t" * 64, "r" * 200, "input_tokens")
    assert len(long) == 100 and "~" in long
    assert long.startswith("fbx:tttt") and long.endswith(":input_tokens")


text = st.text(min_size=0, max_size=150)


@given(text, text, text)
def test_event_key_is_short_and_deterministic(tenant: str, unit: str, meter: str) -> None:
    key = event_key(tenant, unit, meter)
    assert len(key) <= 100
    assert key == event_key(tenant, unit, meter)
    assert key.isascii() and key.startswith("fbx:")


@given(st.tuples(text, text, text), st.tuples(text, text, text))
def test_event_key_is_injective(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    if a != b:
        assert event_key(*a) != event_key(*b)


def test_meter_event_validates() -> None:
    for bad in ("1e3", "+1", "1.", ".5", "01", "0.0000000000001", "NaN", ""):
        with pytest.raises(ValueError):
            event(value=bad)
    with pytest.raises(ValueError):
        MeterEvent("k" * 101, "t1", CUSTOMER, "m", "1", NOW, {})
    assert event(value="-0.000123").value == "-0.000123"


def test_request_repr_hides_headers_and_body() -> None:
    sink = StripeV2Stream(EVENT_NAMES)
    request = sink.encode([event()], token="ek_secret_token")[0]
    assert "ek_secret_token" not in repr(request) and "cus_ABC" not in repr(request)
    hook = Webhook("/h", b"whsec_do_not_log")
    assert "whsec" not in repr(hook)


# -- Stripe v1 -------------------------------------------------------------------------------


def test_stripe_v1_form_encoding() -> None:
    sink = StripeV1(EVENT_NAMES, dimensions=["model"])
    (request,) = sink.encode([event()])
    assert (request.method, request.path) == ("POST", "/v1/billing/meter_events")
    assert request.headers == {"content-type": "application/x-www-form-urlencoded"}
    assert "authorization" not in request.headers and "idempotency-key" not in request.headers
    assert dict(parse_qsl(request.body.decode(), strict_parsing=True)) == {
        "event_name": "fbx_input_tokens",
        "identifier": "fbx:t1:req_00000:input_tokens",
        "timestamp": str(NOW - 60),
        "payload[stripe_customer_id]": "cus_ABC",
        "payload[value]": "1532",
        "payload[model]": "gpt-4.1",
    }
    assert request.keys == ("fbx:t1:req_00000:input_tokens",)
    assert sink.max_batch == 1 and len(sink.encode(many(3))) == 3


async def test_stripe_v1_delivers_and_duplicates_count_as_delivered(
    http: httpx.AsyncClient,
) -> None:
    sink = StripeV1(EVENT_NAMES)
    events = [event(0), event(1, meter="cost_usd", value="0.000123")]
    async with StripeFake(api_key=API_KEY) as fake:
        first = await send_all(http, fake.root_url, sink, events)
        assert all_status(first, Status.DELIVERED)
        assert fake.accepted[events[1].key]["payload"] == {
            "stripe_customer_id": "cus_ABC",
            "value": "0.000123",
        }
        again = await send_all(http, fake.root_url, sink, events)
        assert all_status(again, Status.DUPLICATE) and again.delivered == [e.key for e in events]
        assert len(fake.accepted) == 2 and fake.duplicates[events[0].key] == 1
        status, body = fake.rejections[-1]
        assert status == 400 and "already exists with identifier" in body["error"]["message"]


async def test_stripe_fake_enforces_the_format(http: httpx.AsyncClient) -> None:
    sink = StripeV1(EVENT_NAMES)
    async with StripeFake(api_key=API_KEY) as fake:
        url = fake.root_url + "/v1/billing/meter_events"
        good = sink.encode([event()])[0]
        form = dict(parse_qsl(good.body.decode()))
        # a JSON body is refused
        r = await raw_post(http, url, orjson.dumps(form), "application/json")
        assert r.status_code == 400
        assert sink.classify(r.status_code, r.headers, r.content, good).dead
        # a missing field is refused and classified dead
        for missing in ("event_name", "payload[value]", "payload[stripe_customer_id]"):
            body = "&".join(f"{k}={v}" for k, v in form.items() if k != missing)
            r = await raw_post(http, url, body.encode(), "application/x-www-form-urlencoded")
            assert r.status_code == 400 and missing in r.json()["error"]["message"]
            outcome = sink.classify(r.status_code, r.headers, r.content, good)
            assert "Missing required param" in outcome.dead[good.keys[0]]
        # percent-encoded brackets are the same field
        encoded = good.body.replace(b"[", b"%5B").replace(b"]", b"%5D")
        r = await raw_post(http, url, encoded, "application/x-www-form-urlencoded")
        assert r.status_code == 200
        # identifiers over 100 characters, unknown params and bad timestamps are refused
        for name, value in (("identifier", "x" * 101), ("bogus", "1"), ("timestamp", "soon")):
            body = "&".join(f"{k}={v}" for k, v in {**form, name: value}.items())
            r = await raw_post(http, url, body.encode(), "application/x-www-form-urlencoded")
            assert r.status_code == 400, name
        # without the API key
        r = await http.post(url, content=good.body, headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
        dead = sink.classify(r.status_code, r.headers, r.content, good).dead
        assert "credentials" in dead[good.keys[0]]
        assert len(fake.accepted) == 1


async def test_stripe_35_day_window(http: httpx.AsyncClient) -> None:
    sink = StripeV1(EVENT_NAMES)
    day = 86400
    assert not too_old(event(timestamp=NOW - 35 * day), NOW)
    assert too_old(event(timestamp=NOW - 35 * day - 1), NOW)
    assert not too_old(event(timestamp=NOW + 300), NOW)
    assert too_old(event(timestamp=NOW + 301), NOW)
    old, future, fine = (
        event(0, timestamp=NOW - 36 * day),
        event(1, timestamp=NOW + 600),
        event(2, timestamp=NOW - 34 * day),
    )
    sendable, outcome = screen(sink, [old, future, fine], NOW)
    assert sendable == [fine]
    assert set(outcome.dead) == {old.key, future.key}
    assert all("outside Stripe's 35-day window" in r for r in outcome.dead.values())
    async with StripeFake(api_key=API_KEY) as fake:
        # and the fake refuses what the screen would have caught
        result = await send_all(http, fake.root_url, sink, [old, fine])
        assert result.verdicts[old.key].status is Status.DEAD
        assert result.verdicts[fine.key].status is Status.DELIVERED


def test_missing_customer_ids_are_dead() -> None:
    bare = event(customer={})
    sinks: list[Sink] = [StripeV1(EVENT_NAMES), Lago(), Metronome(), OpenMeter()]
    fields = [
        "stripe_customer_id",
        "lago_external_subscription_id",
        "metronome_customer_id",
        "openmeter_subject",
    ]
    for sink, field in zip(sinks, fields, strict=True):
        sendable, outcome = screen(sink, [bare], NOW)
        assert sendable == [] and outcome.dead == {bare.key: f"tenant has no {field}"}
        with pytest.raises(ValueError):
            sink.encode([bare])
    assert screen(Webhook("/h", b"s"), [bare], NOW)[0] == [bare]
    _, outcome = screen(StripeV1({}), [event()], NOW)
    assert "no Stripe event_name" in outcome.dead[event().key]


async def test_stripe_v1_retries(http: httpx.AsyncClient) -> None:
    sink = StripeV1(EVENT_NAMES)
    (request,) = sink.encode([event()])
    async with StripeFake(api_key=API_KEY) as fake:
        fake.throttle(retry_after=2.5)
        outcome = await send(http, fake.root_url, sink, request)
        assert outcome.retry == list(request.keys) and outcome.retry_after == 2.5
        fake.fail(500)
        outcome = await send(http, fake.root_url, sink, request)
        assert outcome.retry == list(request.keys) and outcome.retry_after is None
        fake.slow(1.0)
        outcome = await send(http, fake.root_url, sink, request, deadline=0.2)
        assert outcome.verdicts[request.keys[0]].reason == "transport error"
        assert all_status(await send(http, fake.root_url, sink, request), Status.DELIVERED)
    # Stripe's own retry hint wins over the status code
    assert sink.classify(409, {"Stripe-Should-Retry": "true"}, b"", request).retry
    assert sink.classify(500, {"stripe-should-retry": "false"}, b"", request).dead
    assert sink.classify(0, {}, b"", request).retry


# -- Stripe v2 stream ------------------------------------------------------------------------


async def test_stripe_v2_stream(http: httpx.AsyncClient) -> None:
    sink = StripeV2Stream(EVENT_NAMES)
    events = many(250)
    clock = [float(NOW)]
    async with StripeFake(api_key=API_KEY, now=lambda: clock[0]) as fake:
        session = sink.session_request()
        r = await http.post(
            fake.root_url + session.path, content=session.body, headers=session.headers
        )
        token, expires_at = sink.parse_session(r.content)
        assert expires_at == NOW + 900
        with pytest.raises(ValueError):
            sink.encode(events)
        requests = sink.encode(events, token=token)
        assert [len(r.keys) for r in requests] == [100, 100, 50]
        wire = orjson.loads(requests[0].body)["events"][0]
        assert wire["timestamp"].endswith("Z") and wire["payload"]["value"] == "1532"
        assert requests[0].headers["authorization"] == f"Bearer {token}"
        for request in requests:
            assert all_status(await send(http, fake.root_url, sink, request), Status.DELIVERED)
        assert len(fake.accepted) == 250 and not fake.async_errors
        # a resend is dropped silently and still answered 200
        assert all_status(await send(http, fake.root_url, sink, requests[2]), Status.DELIVERED)
        assert len(fake.accepted) == 250 and sum(fake.duplicates.values()) == 50
        # after 15 minutes the session is gone: retry after refreshing
        clock[0] += 901
        outcome = await send(http, fake.root_url, sink, requests[0])
        assert outcome.retry and sink.session_expired(outcome)
        # bad events are accepted and reported asynchronously
        stale = sink.encode([event(999, timestamp=NOW - 40 * 86400)], token=token)[0]
        clock[0] = NOW
        assert not (await send(http, fake.root_url, sink, stale)).dead
        assert fake.async_errors == [(stale.keys[0], "timestamp_too_far_in_past")]


# -- Lago ------------------------------------------------------------------------------------


def test_lago_wire_format_matches_the_spec_schema() -> None:
    sink = Lago()
    (request,) = sink.encode(many(2))
    body = orjson.loads(request.body)
    assert request.path == "/api/v1/events/batch"
    assert body["events"][0] == {
        "transaction_id": "fbx:t1:req_00000:input_tokens",
        "external_subscription_id": "sub_t1",
        "code": "input_tokens",
        "timestamp": NOW - 60,
        "properties": {"model": "gpt-4.1", "feature": "chat", "value": "1532"},
    }
    assert all(lago_event_errors(e) == {} for e in body["events"])
    assert isinstance(body["events"][0]["timestamp"], int)
    # what the schema refuses
    bad = dict(body["events"][0], timestamp="2026-11-22T10:00:00Z", code=None)
    assert lago_event_errors(bad) == {
        "code": ["value_is_mandatory"],
        "timestamp": ["invalid_format"],
    }
    assert lago_event_errors(dict(bad, code="x", timestamp=1.5)) == {"timestamp": ["invalid_type"]}
    assert lago_event_errors(dict(bad, code="x", timestamp="1651240791.123")) == {}


def test_lago_schema_copy_matches_the_openapi_spec() -> None:
    if not SPEC.exists():
        pytest.skip("Lago OpenAPI spec not available")
    import yaml

    spec = yaml.load(SPEC.read_text(), Loader=yaml.CSafeLoader)
    assert spec["paths"]["/events/batch"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/EventBatchInput"}
    schema = spec["components"]["schemas"]["EventInputObject"]

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ("description", "example")}
        return node

    assert strip(schema) == LAGO_EVENT_INPUT
    error = spec["components"]["schemas"]["ApiErrorUnprocessableEntity"]
    assert set(error["required"]) == {"status", "error", "code", "error_details"}


async def test_lago_batches_and_delivers(http: httpx.AsyncClient) -> None:
    sink = Lago()
    events = many(250)
    async with LagoFake(api_key=API_KEY) as fake:
        requests = sink.encode(events)
        assert [len(r.keys) for r in requests] == [100, 100, 50]
        outcome = await send_all(http, fake.root_url, sink, events)
        assert all_status(outcome, Status.DELIVERED) and len(fake.accepted) == 250
        # the fake refuses more than 100 and an empty batch, as Lago does
        url = fake.root_url + "/api/v1/events/batch"
        wire = [sink.wire(e) for e in many(101)]
        r = await raw_post(http, url, orjson.dumps({"events": wire}), "application/json")
        assert r.status_code == 422 and r.json()["error_details"] == {"events": ["too_many_events"]}
        assert all_status(sink.classify(422, r.headers, r.content, requests[0]), Status.DEAD)
        r = await raw_post(http, url, orjson.dumps({"events": []}), "application/json")
        assert r.json()["error_details"] == {"events": ["no_events"]}


async def test_lago_partial_duplicate_batch(http: httpx.AsyncClient) -> None:
    sink = Lago()
    events = many(5)
    async with LagoFake(api_key=API_KEY) as fake:
        await send_all(http, fake.root_url, sink, [events[1], events[3]])
        (request,) = sink.encode(events)
        outcome = await send(http, fake.root_url, sink, request)
        status, body = fake.rejections[-1]
        assert status == 422 and body["code"] == "validation_errors"
        assert body["error_details"] == {
            "1": {"transaction_id": ["value_already_exist"]},
            "3": {"transaction_id": ["value_already_exist"]},
        }
        assert len(fake.accepted) == 2  # all-or-nothing: nothing of this batch was stored
        assert outcome.keys(Status.DUPLICATE) == [events[1].key, events[3].key]
        assert outcome.retry == [events[0].key, events[2].key, events[4].key]
        # resend the rest without the duplicates
        rest = [e for e in events if e.key in outcome.retry]
        assert all_status(await send_all(http, fake.root_url, sink, rest), Status.DELIVERED)
        assert set(fake.accepted) == {e.key for e in events}
        assert fake.duplicates == {events[1].key: 1, events[3].key: 1}


async def test_lago_invalid_event_is_dead_and_others_retry(http: httpx.AsyncClient) -> None:
    sink = Lago()
    events = many(3)
    async with LagoFake(api_key=API_KEY) as fake:
        (request,) = sink.encode(events)
        body = orjson.loads(request.body)
        body["events"][2]["timestamp"] = "2026-11-22T10:00:00Z"  # ISO is refused by Lago
        r = await raw_post(
            http, fake.root_url + request.path, orjson.dumps(body), "application/json"
        )
        outcome = sink.classify(r.status_code, r.headers, r.content, request)
        assert outcome.retry == [events[0].key, events[1].key]
        assert "invalid_format" in outcome.dead[events[2].key]


async def test_lago_rate_limit_and_clickhouse_mode(http: httpx.AsyncClient) -> None:
    sink = Lago()
    (request,) = sink.encode([event()])
    outcome = sink.classify(429, {"x-ratelimit-reset": "7"}, b"", request)
    assert outcome.retry and outcome.retry_after == 7
    async with LagoFake(api_key=API_KEY, store="clickhouse") as fake:
        fake.throttle(retry_after=3)
        assert (await send(http, fake.root_url, sink, request)).retry_after == 3
        for _ in range(2):
            assert all_status(await send(http, fake.root_url, sink, request), Status.DELIVERED)
        assert len(fake.accepted) == 1 and fake.duplicates[request.keys[0]] == 1


# -- Metronome -------------------------------------------------------------------------------


async def test_metronome_format_batches_and_silent_duplicates(http: httpx.AsyncClient) -> None:
    sink = Metronome()
    events = many(150, meter="cost_usd", value="0.005056")
    requests = sink.encode(events)
    assert [len(r.keys) for r in requests] == [100, 50]
    wire = orjson.loads(requests[0].body)
    assert isinstance(wire, list)
    first = wire[0]
    assert set(first) == {"transaction_id", "customer_id", "event_type", "timestamp", "properties"}
    assert first["customer_id"] == "tenant-1@acme" and first["event_type"] == "cost_usd"
    assert first["properties"] == {"model": "gpt-4.1", "feature": "chat", "value": "0.005056"}
    assert first["timestamp"].endswith("Z") and len(first["timestamp"]) == 20
    async with MetronomeFake(api_key=API_KEY) as fake:
        assert all_status(await send_all(http, fake.root_url, sink, events), Status.DELIVERED)
        again = await send_all(http, fake.root_url, sink, events[:10])
        assert all_status(again, Status.DELIVERED)
        assert len(fake.accepted) == 150 and sum(fake.duplicates.values()) == 10
        url = fake.root_url + "/v1/ingest"
        bad_bodies: list[Any] = [[], [sink.wire(e) for e in many(101)], {"events": []}]
        for bad in bad_bodies:
            r = await raw_post(http, url, orjson.dumps(bad), "application/json")
            assert r.status_code == 400
            assert all_status(sink.classify(400, r.headers, r.content, requests[1]), Status.DEAD)
        numeric = dict(sink.wire(event(7)), properties={"value": 1.5})
        r = await raw_post(http, url, orjson.dumps([numeric]), "application/json")
        assert r.status_code == 400
        fake.fail(503)
        outcome = await send(http, fake.root_url, sink, requests[1])
        assert outcome.retry == list(requests[1].keys)
    _, outcome = screen(sink, [event(timestamp=NOW - 35 * 86400)], NOW)
    assert "Metronome's window" in next(iter(outcome.dead.values()))


# -- OpenMeter -------------------------------------------------------------------------------


async def test_openmeter_cloudevents_batch(http: httpx.AsyncClient) -> None:
    sink = OpenMeter(source="farebox-test")
    events = many(3, meter="output_tokens", value="332")
    (request,) = sink.encode(events)
    assert request.headers == {"content-type": "application/cloudevents-batch+json"}
    assert request.headers["content-type"] == CLOUDEVENTS_BATCH
    wire = orjson.loads(request.body)[0]
    assert wire["specversion"] == "1.0" and wire["id"] == events[0].key
    assert wire["source"] == "farebox-test" and wire["type"] == "output_tokens"
    assert wire["subject"] == "tenant-1" and wire["time"].endswith("Z")
    assert wire["data"] == {"model": "gpt-4.1", "feature": "chat", "value": "332"}
    async with OpenMeterFake(api_key=API_KEY) as fake:
        r = await http.post(
            fake.root_url + request.path, content=request.body, headers=request.headers
        )
        assert r.status_code == 204 and r.content == b""
        assert all_status(sink.classify(204, r.headers, b"", request), Status.DELIVERED)
        assert fake.by_id(events[0].key, "farebox-test") is not None
        # a duplicate is dropped silently, still 204
        assert all_status(await send(http, fake.root_url, sink, request), Status.DELIVERED)
        assert len(fake.accepted) == 3 and sum(fake.duplicates.values()) == 3
        # the content type is compared as an exact string
        url = fake.root_url + request.path
        for content_type in (
            "application/cloudevents-batch+json; charset=utf-8",
            "application/json",
            "application/cloudevents+json",
        ):
            r = await raw_post(http, url, request.body, content_type)
            assert r.status_code == 400 and "invalid content type" in r.json()["detail"]
            assert sink.classify(400, r.headers, r.content, request).dead
        for field, value in (("specversion", "0.3"), ("id", ""), ("time", "yesterday")):
            body = orjson.dumps([dict(wire, **{field: value})])
            r = await raw_post(http, url, body, CLOUDEVENTS_BATCH)
            assert r.status_code == 400 and "invalid event" in r.json()["detail"], field
        fake.throttle(retry_after=1)
        outcome = await send(http, fake.root_url, sink, request)
        assert outcome.retry and outcome.retry_after == 1


# -- Webhook ---------------------------------------------------------------------------------


SECRET = b"whsec_test_secret"


def test_webhook_signature_matches_alert_signing() -> None:
    from farebox.notify.channels import signature as alert_signature

    body = b'{"events":[]}'
    assert signature(SECRET, 1763805600, body) == alert_signature(SECRET, 1763805600, body)
    sink = Webhook("/hooks/billing", SECRET, clock=lambda: NOW)
    (request,) = sink.encode([event()])
    header = request.headers["x-farebox-signature"]
    assert header.startswith(f"t={NOW},v1=")
    assert verify(SECRET, header, request.body, NOW)
    assert not verify(b"other", header, request.body, NOW)
    assert not verify(SECRET, header, request.body + b" ", NOW)
    assert not verify(SECRET, header, request.body, NOW + 301)  # replay window
    assert orjson.loads(request.body)["events"][0]["value"] == "1532"
    assert Webhook("", SECRET).encode([event()])[0].path == ""  # the base URL is the endpoint
    with pytest.raises(ValueError):
        Webhook("hooks", SECRET)


async def test_webhook_delivery(http: httpx.AsyncClient) -> None:
    sink = Webhook("/hooks/billing", SECRET, max_batch=2)
    events = many(3)
    async with WebhookFake(SECRET) as fake:
        assert [len(r.keys) for r in sink.encode(events)] == [2, 1]
        assert all_status(await send_all(http, fake.root_url, sink, events), Status.DELIVERED)
        again = await send_all(http, fake.root_url, sink, events)
        assert all_status(again, Status.DUPLICATE) and len(fake.accepted) == 3
        fake.throttle(retry_after=4)
        outcome = await send_all(http, fake.root_url, sink, events[:1])
        assert outcome.retry and outcome.retry_after == 4
        fake.fail(502)
        assert (await send_all(http, fake.root_url, sink, events[:1])).retry
        wrong = Webhook("/hooks/billing", b"wrong secret")
        outcome = await send_all(http, fake.root_url, wrong, events[:1])
        assert "HTTP 401" in outcome.dead[events[0].key]
        fake.fail(400, body={"error": "bad"})
        assert (await send_all(http, fake.root_url, sink, events[:1])).dead


# -- exactly-once under random faults --------------------------------------------------------


async def test_retry_loop_delivers_each_event_once_under_faults(http: httpx.AsyncClient) -> None:
    events = many(120, meter="cost_usd", value="0.25")
    cases: list[tuple[Sink, Any]] = [
        (StripeV1(EVENT_NAMES), StripeFake(api_key=API_KEY)),
        (Lago(), LagoFake(api_key=API_KEY)),
        (Metronome(), MetronomeFake(api_key=API_KEY)),
        (OpenMeter(), OpenMeterFake(api_key=API_KEY)),
        (Webhook("/hooks/billing", SECRET), WebhookFake(SECRET)),
    ]
    for sink, fake in cases:
        async with fake:
            fake.failure_rate(0.4, status=503, seed=7)
            pending = list(events)
            for _ in range(40):
                if not pending:
                    break
                outcome = await send_all(http, fake.root_url, sink, pending)
                assert not outcome.dead, (sink.name, outcome.dead)
                pending = [e for e in pending if e.key in outcome.retry]
            assert not pending, sink.name
            assert len(fake.accepted) == len(events), sink.name
