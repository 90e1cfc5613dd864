"""Anomaly alerts on the wire: a real ``Pager`` (PagerDuty Events v2 and a Slack incoming
webhook) against loopback fakes that enforce the formats, ``Channel`` retries (5xx, 429 with
Retry-After, network errors) and final refusals, and the signed ``WebhookAlerts``."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fakes import FakeUpstream, Recorded, Reply
from fakes.paging import PagerDutyFake, SlackFake
from farebox.anomaly.paging import Pager
from farebox.config.anomaly import AnomalySettings
from farebox.core.anomaly import Incident
from farebox.http.client import HttpClient
from farebox.notify import formats
from farebox.notify.channels import Channel, WebhookAlerts
from farebox.sinks.webhook import SIGNATURE_HEADER, verify

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, like a real integration key
NOV22 = 1_795_341_600  # 2026-11-22T10:00:00Z
BACKOFF = 0.01
DRAIN = 10.0  # an upper bound: drain returns as soon as the queue is empty
SECRET = b"whsec-test-secret"


def incident(**kw: Any) -> Incident:
    values: dict[str, Any] = {
        "id": "inc_1", "tenant_id": "acme", "key_id": "", "target": "tenant", "target_key": "",
        "metric": "requests", "observed": 9_000, "baseline": 60, "threshold": 360,
        "opened_at": float(NOV22), "dedup_key": "farebox:anomaly:acme:inc_1",
    }  # fmt: skip
    values.update(kw)
    return Incident(**values)


class Receiver(FakeUpstream):
    """A webhook endpoint: 200 for every POST unless a reply is scripted."""

    def default_reply(self, request: Recorded) -> Reply:
        return Reply(status=200, body={"received": True})


@pytest.fixture
async def pd() -> AsyncIterator[PagerDutyFake]:
    async with PagerDutyFake(ROUTING_KEY) as fake:
        yield fake


@pytest.fixture
async def slack() -> AsyncIterator[SlackFake]:
    async with SlackFake() as fake:
        yield fake


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    try:
        yield client
    finally:
        await client.aclose()


def settings(pd: PagerDutyFake, **pagerduty: Any) -> AnomalySettings:
    return AnomalySettings(
        pagerduty={"routing_key": "env:FAREBOX_PD_KEY", "base_url": pd.root_url, **pagerduty},
        slack={"webhook_url": "env:FAREBOX_SLACK_URL"},
        webhook=False,
    )


def make_pager(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient, routing_key: str = ROUTING_KEY,
    **pagerduty: Any,
) -> Pager:  # fmt: skip
    secrets = {"pagerduty": routing_key, "slack": slack.url}
    return Pager(settings(pd, **pagerduty), secrets, http, backoff_s=BACKOFF)


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pd_posts(pd: PagerDutyFake) -> list[Recorded]:
    return [r for r in pd.requests if r.path == "/v2/enqueue"]


# --- PagerDuty and Slack through a Pager ------------------------------------------------------


async def test_trigger_then_resolve_reach_pagerduty_in_order(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    pager = make_pager(pd, slack, http)
    assert pager.channels == ["pagerduty", "slack"]
    inc = incident()
    pager.triggered(inc)
    pager.resolved(incident(resolved_at=NOV22 + 600.0))
    await pager.aclose(DRAIN)
    assert pd.invalid == []
    assert [(e["event_action"], e["dedup_key"]) for e in pd.events] == [
        ("trigger", inc.dedup_key), ("resolve", inc.dedup_key),
    ]  # fmt: skip
    assert pd.open == {} and pd.resolved == [inc.dedup_key]  # the alert ends closed
    assert pd.events[1] == {
        "routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": inc.dedup_key,
    }  # fmt: skip
    assert all(r.headers["content-type"] == "application/json" for r in pd.requests)
    assert all("authorization" not in r.headers for r in pd.requests)  # the key is in the body
    assert [m["text"] for m in slack.messages] == [
        formats.summary(inc),
        "Resolved: Farebox anomaly on tenant acme (inc_1); resumed.",
    ]


async def test_trigger_format_exactly(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    pager = make_pager(
        pd, slack, http, severity="warning", source="gw-test", client_url="https://gw.test/admin"
    )
    inc = incident(
        key_id="k1", target="key", target_key="k1", metric="spend", observed=12 * 10**12,
        baseline=10**12, threshold=6 * 10**12, detail={"window_s": 600, "keys": 3},
    )  # fmt: skip
    pager.triggered(inc)
    await pager.aclose(DRAIN)
    (event,) = pd.triggers()
    assert event == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "farebox:anomaly:acme:inc_1",
        "client": "Farebox",
        "client_url": "https://gw.test/admin",
        "payload": {
            "summary": "Farebox anomaly: key k1 of tenant acme at $12.00/hour, 1100% above its "
            "baseline of $1.00/hour; paused key k1 of tenant acme",
            "source": "gw-test",
            "severity": "warning",
            "timestamp": "2026-11-22T10:00:00.000+0000",
            "component": "anomaly-detector",
            "group": "acme",
            "class": "traffic_anomaly.spend",
            "custom_details": {
                "incident": "inc_1",
                "tenant": "acme",
                "key": "k1",
                "metric": "spend",
                "observed_per_hour": "12.00",
                "baseline_per_hour": "1.00",
                "threshold_per_hour": "6.00",
                "unit": "usd",
                "action": "key",
                "paused_key": "k1",
                "opened_at": float(NOV22),
                "window_s": 600,
                "keys": 3,
            },
        },
    }
    (message,) = slack.messages
    assert message["text"] == event["payload"]["summary"]
    assert [b["type"] for b in message["blocks"]] == ["section", "context"]


async def test_trigger_defaults_and_a_requests_anomaly(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    pager = make_pager(pd, slack, http)
    pager.triggered(incident(target="none", opened_at=NOV22 + 0.5))
    await pager.aclose(DRAIN)
    (event,) = pd.triggers()
    assert "client_url" not in event
    payload = event["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "farebox"
    assert payload["timestamp"] == "2026-11-22T10:00:00.500+0000"
    assert payload["summary"] == (
        "Farebox anomaly: tenant acme at 9,000 requests/hour, 14900% above its baseline of "
        "60 requests/hour; paused nothing (alert only)"
    )
    details = payload["custom_details"]
    assert details["observed_per_hour"] == 9_000 and details["unit"] == "requests"
    assert details["key"] is None and details["paused_key"] is None
    assert details["action"] == "none"


async def test_long_dedup_keys_and_summaries_are_cut_to_the_limits(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    pager = make_pager(pd, slack, http)
    inc = incident(tenant_id="t" * 1_100, dedup_key="d" * 300)
    pager.triggered(inc)
    pager.resolved(inc)
    await pager.aclose(DRAIN)
    assert pd.invalid == []
    trigger, resolve = pd.events
    assert trigger["dedup_key"] == resolve["dedup_key"] == "d" * 255
    assert len(trigger["payload"]["summary"]) == 1_024
    assert trigger["payload"]["summary"] == formats.summary(inc)
    assert pd.open == {} and pd.resolved == ["d" * 255]


def test_pd_timestamp() -> None:
    assert formats.pd_timestamp(NOV22) == "2026-11-22T10:00:00.000+0000"
    assert formats.pd_timestamp(NOV22 + 3_661.25) == "2026-11-22T11:01:01.250+0000"


async def test_a_5xx_is_retried_and_delivered_once(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    pd.push(Reply(status=500, body={"status": "error", "message": "try again", "errors": []}))
    pager = make_pager(pd, slack, http)
    inc = incident()
    pager.triggered(inc)
    pager.resolved(inc)  # queued behind the retried trigger: never overtakes it
    await pager.aclose(DRAIN)
    actions = [r.json["event_action"] for r in pd_posts(pd)]
    assert actions == ["trigger", "trigger", "resolve"]
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]  # once each
    assert pd.open == {} and pd.resolved == [inc.dedup_key]


async def test_a_429_waits_for_retry_after(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    pd.push(Reply(status=429, body=b"Request Limit Exceeded", headers={"Retry-After": "0.3"}))
    pager = make_pager(pd, slack, http)
    loop = asyncio.get_running_loop()
    started = loop.time()
    pager.triggered(incident())
    await pager.aclose(DRAIN)
    elapsed = loop.time() - started
    assert len(pd_posts(pd)) == 2 and len(pd.triggers()) == 1
    assert elapsed >= 0.3  # Retry-After, not the 10 ms backoff
    assert elapsed < 5


async def test_a_400_is_final(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="farebox.alerts")
    pager = make_pager(pd, slack, http, routing_key="not-the-integration-key")
    pager.triggered(incident())
    await pager.aclose(DRAIN)
    assert len(pd_posts(pd)) == 1  # exactly one request
    assert pd.events == [] and pd.invalid == [["'routing_key' is invalid"]]
    assert "refused for good (HTTP 400)" in caplog.text
    assert "not-the-integration-key" not in caplog.text


async def test_after_a_final_refusal_the_queue_moves_on(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    pd.push(Reply(status=400, body={"status": "invalid event", "errors": ["scripted"]}))
    pager = make_pager(pd, slack, http)
    first, second = incident(), incident(id="inc_2", dedup_key="farebox:anomaly:acme:inc_2")
    pager.triggered(first)
    pager.triggered(second)
    await pager.aclose(DRAIN)
    assert len(pd_posts(pd)) == 2
    assert [e["dedup_key"] for e in pd.events] == [second.dedup_key]


async def test_a_network_error_is_retried_then_dropped(
    http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="farebox.alerts")
    url = f"http://127.0.0.1:{closed_port()}/v2/enqueue"
    channel = Channel("pagerduty", url, http, lambda r: r.status == 202, attempts=3,
                      backoff_s=BACKOFF)  # fmt: skip
    channel.send({"event_action": "trigger"}, "trigger inc_1")
    await channel.drain(DRAIN)  # does not raise
    records = [r for r in caplog.records if r.name == "farebox.alerts"]
    failed = [r for r in records if "trigger inc_1 failed" in r.getMessage()]
    assert len(failed) == 3 and all(r.levelno == logging.WARNING for r in failed)
    assert records[-1].levelno == logging.ERROR
    assert records[-1].getMessage() == "pagerduty: trigger inc_1 dropped after 3 attempts"
    assert url not in caplog.text


async def test_a_pager_whose_pagerduty_is_down_still_messages_slack(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    down = AnomalySettings(
        pagerduty={"routing_key": "env:K", "base_url": f"http://127.0.0.1:{closed_port()}"},
        slack={"webhook_url": "env:S"},
        retry_attempts=2,
    )
    pager = Pager(down, {"pagerduty": ROUTING_KEY, "slack": slack.url}, http, backoff_s=BACKOFF)
    pager.triggered(incident())
    await pager.aclose(DRAIN)
    assert len(slack.messages) == 1


async def test_drain_gives_up_on_time(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    for _ in range(3):
        pd.push(Reply(status=503, body={"status": "unavailable"}))
    cfg = settings(pd)
    pager = Pager(cfg, {"pagerduty": ROUTING_KEY, "slack": slack.url}, http, backoff_s=30.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    pager.triggered(incident())
    await pager.aclose(0.2)  # a 30 s backoff is not waited for
    assert loop.time() - started < 5
    assert len(pd_posts(pd)) == 1 and pd.events == []


# --- Slack ----------------------------------------------------------------------------------


def test_slack_success_is_200_and_the_body_ok() -> None:
    assert formats.slack_accepted(200, b"ok")
    assert formats.slack_accepted(200, b"ok\n")
    assert not formats.slack_accepted(200, b"")
    assert not formats.slack_accepted(200, b'{"ok": true}')
    assert not formats.slack_accepted(201, b"ok")
    assert not formats.slack_accepted(400, b"invalid_payload")


async def test_slack_needs_the_body_ok(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="farebox.alerts")
    slack.push(Reply(status=200, body=b"no", headers={"content-type": "text/plain"}))
    pager = make_pager(pd, slack, http)
    pager.triggered(incident())
    await pager.aclose(DRAIN)
    assert slack.calls == 1 and slack.messages == []  # not taken for a delivery
    assert "slack: message inc_1 answered HTTP 200" in caplog.text
    assert slack.path not in caplog.text  # the webhook URL is a secret


async def test_slack_5xx_is_retried_and_404_is_final(
    pd: PagerDutyFake, slack: SlackFake, http: HttpClient
) -> None:
    slack.push(Reply(status=500, body=b"rollup_error", headers={"content-type": "text/plain"}))
    pager = make_pager(pd, slack, http)
    pager.triggered(incident())
    await pager.aclose(DRAIN)
    assert slack.calls == 2 and len(slack.messages) == 1
    slack.push(Reply(status=404, body=b"no_service", headers={"content-type": "text/plain"}))
    pager.resolved(incident())
    await pager.aclose(DRAIN)
    assert slack.calls == 3 and len(slack.messages) == 1


def test_slack_message_shape() -> None:
    inc = incident()
    detected, resolved = formats.slack_message(inc), formats.slack_message(inc, resolved=True)
    assert detected["blocks"][0]["text"]["text"] == f"*Anomaly detected* {formats.summary(inc)}"
    assert resolved["blocks"][0]["text"]["text"].startswith("*Anomaly resolved* Resolved: ")
    context = "incident `inc_1` · metric `requests` · tenant `acme`"
    assert detected["blocks"][1] == {
        "type": "context", "elements": [{"type": "mrkdwn", "text": context}],
    }  # fmt: skip


def test_channels_follow_the_configuration(http: HttpClient) -> None:
    pagerduty = {"routing_key": "env:K", "base_url": "http://127.0.0.1:9"}
    webhook = WebhookAlerts("http://127.0.0.1:9/hook", SECRET, http)
    both = AnomalySettings(pagerduty=pagerduty, slack={"webhook_url": "env:S"})
    secrets = {"pagerduty": ROUTING_KEY, "slack": "http://127.0.0.1:9/s"}
    assert Pager(both, secrets, http, webhook).channels == ["pagerduty", "slack", "webhook"]
    assert Pager(both, {"slack": secrets["slack"]}, http).channels == ["slack"]  # no key
    no_webhook = AnomalySettings(pagerduty=pagerduty, webhook=False)
    assert Pager(no_webhook, secrets, http, webhook).channels == ["pagerduty", "slack"]
    assert Pager(AnomalySettings(), {}, http).channels == []


def test_secrets_must_be_env_references() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="env:NAME"):
        AnomalySettings(pagerduty={"routing_key": ROUTING_KEY})
    with pytest.raises(ValidationError, match="env:NAME"):
        AnomalySettings(slack={"webhook_url": "https://hooks.slack.com/services/T/B/x"})


# --- the signed webhook ---------------------------------------------------------------------


async def test_webhook_alerts_are_signed(receiver: Receiver, http: HttpClient) -> None:
    alerts = WebhookAlerts(receiver.root_url + "/hooks/alerts", SECRET, http, backoff_s=BACKOFF)
    inc = incident(resolved_at=NOV22 + 60.0)
    alerts.send(formats.webhook_event(inc))
    alerts.send(formats.webhook_event(inc, resolved=True))
    await alerts.aclose(DRAIN)
    assert [r.path for r in receiver.requests] == ["/hooks/alerts"] * 2
    now = int(time.time())
    for request in receiver.requests:
        header = request.headers[SIGNATURE_HEADER]
        assert verify(SECRET, header, request.raw, now)
        assert not verify(b"another secret", header, request.raw, now)
        assert not verify(SECRET, header, request.raw + b" ", now)
        assert request.headers["content-type"] == "application/json"
    detected, resolved = (r.json for r in receiver.requests)
    assert detected == orjson.loads(orjson.dumps(formats.webhook_event(inc)))
    assert detected["type"] == "anomaly.detected" and resolved["type"] == "anomaly.resolved"
    assert resolved["resolved_at"] == NOV22 + 60.0 and resolved["tenant"] == "acme"


async def test_webhook_retry_is_signed_again(receiver: Receiver, http: HttpClient) -> None:
    receiver.push(Reply(status=503, body={"error": "busy"}))
    alerts = WebhookAlerts(receiver.root_url + "/hook", SECRET, http, backoff_s=BACKOFF)
    alerts.send({"type": "anomaly.detected", "incident": "inc_1"})
    await alerts.aclose(DRAIN)
    assert receiver.calls == 2
    now = int(time.time())
    assert all(verify(SECRET, r.headers[SIGNATURE_HEADER], r.raw, now) for r in receiver.requests)


async def test_webhook_4xx_is_final_and_unsigned_without_a_secret(
    receiver: Receiver, http: HttpClient
) -> None:
    receiver.push(Reply(status=410, body={"error": "gone"}))
    alerts = WebhookAlerts(receiver.root_url + "/hook", None, http, backoff_s=BACKOFF)
    alerts.send({"type": "anomaly.detected"})
    alerts.send({"type": "anomaly.resolved"})
    await alerts.aclose(DRAIN)
    assert [r.json["type"] for r in receiver.requests] == ["anomaly.detected", "anomaly.resolved"]
    assert all(SIGNATURE_HEADER not in r.headers for r in receiver.requests)


async def test_pager_sends_anomaly_events_to_the_webhook(
    pd: PagerDutyFake, slack: SlackFake, receiver: Receiver, http: HttpClient
) -> None:
    cfg = AnomalySettings(
        pagerduty={"routing_key": "env:K", "base_url": pd.root_url},
        slack={"webhook_url": "env:S"},
    )
    webhook = WebhookAlerts(receiver.root_url + "/hook", SECRET, http, backoff_s=BACKOFF)
    pager = Pager(cfg, {"pagerduty": ROUTING_KEY, "slack": slack.url}, http, webhook, BACKOFF)
    inc = incident()
    pager.triggered(inc)
    pager.resolved(inc)
    await pager.aclose(DRAIN)
    await webhook.aclose(DRAIN)  # the webhook is the app's, drained by it
    assert [r.json["type"] for r in receiver.requests] == ["anomaly.detected", "anomaly.resolved"]
    assert {r.json["dedup_key"] for r in receiver.requests} == {inc.dedup_key}
    assert len(pd.events) == 2 and len(slack.messages) == 2
