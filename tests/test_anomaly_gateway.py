"""Anomaly auto-pause end to end: requests through the gateway are counted, a surge far above
the tenant's baseline pauses it (403 with the reason and how to appeal), PagerDuty and Slack
fakes on loopback get the alert in the exact wire format, and resuming through the admin API
sends PagerDuty ``resolve`` with the same ``dedup_key``.

The gateway's clock is injected; detection rounds are run by calling the watch's ``check``
(the background loop would run the same call every ``check_interval_s``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_KEY
from fakes.paging import PagerDutyFake, SlackFake, pagerduty_errors
from farebox.app import create_app
from farebox.config.settings import parse_settings
from farebox.core.anomaly import DAY, HOUR, MINUTE, TrafficRow
from farebox.core.money import parse_usd

MONDAY = 1794787200  # 2026-11-16 00:00 UTC, a Monday
NOW = MONDAY + 3 * HOUR + 4 * MINUTE  # 03:04 on a Monday
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
CHAT = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(
    pd: PagerDutyFake, plans: dict[str, Any] | None = None, **anomaly: Any
) -> dict[str, Any]:
    return {
        "plans": plans or {"pro": {"models": ["*"]}},
        "default_plan": "pro",
        "anomaly": {
            "check_interval_s": 3600,  # rounds are run by the test
            "retry_backoff_s": 0.01,
            "appeal": "Email oncall@example.com to appeal.",
            "pagerduty": {"routing_key": "env:PD_KEY", "base_url": pd.root_url,
                          "source": "farebox-test"},
            "slack": {"webhook_url": "env:SLACK_URL"},
            **anomaly,
        },
    }  # fmt: skip


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, cfg: dict[str, Any], clock: Clock, slack: SlackFake, db: str = "farebox.db"
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    data = {"database": f"sqlite:///{tmp_path / db}", **cfg}
    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY, "PD_KEY": ROUTING_KEY, "SLACK_URL": slack.url}
    settings = parse_settings(data, source="test.yaml", env=env, base_dir=tmp_path)
    app = create_app(settings, clock=clock, announce=lambda _m: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            client.headers["authorization"] = f"Bearer {ADMIN_KEY}"
            yield app, client


async def new_key(client: httpx.AsyncClient, tenant: str) -> tuple[str, str]:
    r = await client.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "ci"})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


async def tenant_with_history(
    app: Any, client: httpx.AsyncClient, tenant: str, per_hour: int = 60, plan: str = "pro"
) -> tuple[str, str]:
    """A tenant with two weeks of steady traffic (``per_hour`` requests every hour)."""
    r = await client.post("/admin/v1/tenants", json={"id": tenant, "plan": plan})
    assert r.status_code == 201, r.text
    key_id, raw = await new_key(client, tenant)
    rows = [
        TrafficRow(tenant, key_id, hour, per_hour, per_hour * parse_usd("0.001"))
        for hour in range(MONDAY + 3 * HOUR - 14 * DAY, MONDAY + 3 * HOUR, HOUR)
    ]
    await app.state.services.store.traffic.add(rows)
    return key_id, raw


async def send(client: httpx.AsyncClient, key: str, count: int) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}"}
    return [await client.post("/v1/chat/completions", json=CHAT, headers=headers)
            for _ in range(count)]  # fmt: skip


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[PagerDutyFake, SlackFake]]:
    async with PagerDutyFake(ROUTING_KEY) as pd, SlackFake() as slack:
        yield pd, slack


async def surge(app: Any, client: httpx.AsyncClient, clock: Clock, key: str) -> list[Any]:
    """130 requests at 03:04, then a detection round a minute later: 866/h in the window."""
    assert all(r.status_code == 200 for r in await send(client, key, 130))
    clock.now = NOW + MINUTE
    return list(await app.state.watch.check())


async def drain(app: Any) -> None:
    await app.state.watch.pager.aclose(5.0)


async def test_a_surge_pauses_the_tenant_pages_and_resume_resolves(
    tmp_path: Path, fakes: tuple[PagerDutyFake, SlackFake]
) -> None:
    pd, slack = fakes
    clock = Clock(NOW)
    async with gateway(tmp_path, config(pd), clock, slack) as (app, client):
        _, key = await tenant_with_history(app, client, "acme")
        _, other = await tenant_with_history(app, client, "globex")
        assert all(r.status_code == 200 for r in await send(client, key, 130))
        assert all(r.status_code == 200 for r in await send(client, other, 8))  # ordinary
        clock.now = NOW + MINUTE
        (incident,) = await app.state.watch.check()  # 130 in the window: 866/h against 60/h
        assert (incident.tenant_id, incident.target, incident.metric) == (
            "acme", "tenant", "requests",
        )  # fmt: skip
        assert incident.observed > 6 * incident.baseline

        refused = await send(client, key, 1)
        assert refused[0].status_code == 403
        error = refused[0].json()["error"]
        assert error["code"] == "tenant_paused"
        assert incident.id in error["message"] and "oncall@example.com" in error["message"]
        assert incident.id in error["reason"] and error["appeal"].startswith("Email oncall")
        assert (await send(client, other, 1))[0].status_code == 200  # others unaffected

        await drain(app)
        (trigger,) = pd.triggers()
        assert pagerduty_errors(trigger, ROUTING_KEY) == []
        assert trigger["dedup_key"] == incident.dedup_key
        payload = trigger["payload"]
        assert payload["source"] == "farebox-test" and payload["severity"] == "critical"
        assert "acme" in payload["summary"] and payload["group"] == "acme"
        assert payload["custom_details"]["incident"] == incident.id
        assert payload["custom_details"]["observed_per_hour"] == incident.observed
        assert len(slack.messages) == 1 and "acme" in slack.messages[0]["text"]

        listed = (await client.get("/admin/v1/anomalies?status=open")).json()["data"]
        assert [i["id"] for i in listed] == [incident.id]

        r = await client.post("/admin/v1/tenants/acme/resume")
        assert r.status_code == 200 and r.json()["resolved_incidents"] == [incident.id]
        await drain(app)
        assert pd.events[-1] == {
            "routing_key": ROUTING_KEY, "event_action": "resolve",
            "dedup_key": incident.dedup_key,
        }  # fmt: skip
        assert pd.resolved == [incident.dedup_key] and pd.open == {}
        assert "Resolved" in slack.messages[-1]["text"]
        assert (await send(client, key, 1))[0].status_code == 200
        resolved = (await client.get("/admin/v1/anomalies?tenant=acme")).json()["data"]
        assert resolved[0]["status"] == "resolved"

        # the cooldown: the same surge right after the resume opens no second incident
        await send(client, key, 60)
        clock.now = NOW + 2 * MINUTE
        assert await app.state.watch.check() == []
        await drain(app)
        assert len(pd.triggers()) == 1


async def test_ordinary_traffic_and_a_daily_peak_page_nobody(
    tmp_path: Path, fakes: tuple[PagerDutyFake, SlackFake]
) -> None:
    pd, slack = fakes
    clock = Clock(NOW)
    async with gateway(tmp_path, config(pd), clock, slack) as (app, client):
        key_id, key = await tenant_with_history(app, client, "acme")
        # every weekday at 03:00 this tenant runs a batch at 40x its usual rate
        store = app.state.services.store
        peaks = [TrafficRow("acme", key_id, MONDAY + 3 * HOUR - d * DAY, 2400, 0)
                 for d in range(1, 15) if (MONDAY - d * DAY) // DAY % 7 not in (2, 3)]  # fmt: skip
        await store.traffic.add(peaks)
        assert all(r.status_code == 200 for r in await send(client, key, 150))
        clock.now = NOW + MINUTE
        assert await app.state.watch.check() == []
        await drain(app)
        assert pd.events == [] and slack.messages == []


async def test_pause_key_action_pauses_only_the_runaway_key(
    tmp_path: Path, fakes: tuple[PagerDutyFake, SlackFake]
) -> None:
    pd, slack = fakes
    clock = Clock(NOW)
    plans = {"pro": {"models": ["*"], "anomaly": {"action": "pause_key"}}}
    async with gateway(tmp_path, config(pd, plans), clock, slack) as (app, client):
        ci_id, ci = await tenant_with_history(app, client, "acme")
        _, web = await new_key(client, "acme")
        (incident,) = await surge(app, client, clock, ci)
        assert (incident.target, incident.target_key) == ("key", ci_id)
        refused = (await send(client, ci, 1))[0]
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "key_paused"
        assert (await send(client, web, 1))[0].status_code == 200

        r = await client.post(f"/admin/v1/keys/{ci_id}/resume")
        assert r.json()["resolved_incidents"] == [incident.id]
        await drain(app)
        assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]
        assert pd.events[1]["dedup_key"] == incident.dedup_key


async def test_alert_only_plans_page_but_keep_serving(
    tmp_path: Path, fakes: tuple[PagerDutyFake, SlackFake]
) -> None:
    pd, slack = fakes
    clock = Clock(NOW)
    plans = {"pro": {"models": ["*"], "anomaly": {"action": "alert"}}}
    async with gateway(tmp_path, config(pd, plans), clock, slack) as (app, client):
        await tenant_with_history(app, client, "acme")
        _, key = await tenant_with_history(app, client, "acme2")
        (incident,) = await surge(app, client, clock, key)
        assert incident.target == "none"
        assert (await send(client, key, 1))[0].status_code == 200
        r = await client.post(f"/admin/v1/anomalies/{incident.id}/resolve")
        assert r.status_code == 200 and r.json()["status"] == "resolved"
        missing = await client.post("/admin/v1/anomalies/anom_nope/resolve")
        assert missing.status_code == 404
        await drain(app)
        assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]


async def test_detection_disabled_counts_nothing(
    tmp_path: Path, fakes: tuple[PagerDutyFake, SlackFake]
) -> None:
    pd, slack = fakes
    clock = Clock(NOW)
    async with gateway(tmp_path, config(pd, enabled=False), clock, slack) as (app, client):
        _, key = await tenant_with_history(app, client, "acme")
        assert await surge(app, client, clock, key) == []
        assert await app.state.services.store.traffic.since(NOW - HOUR) == []


async def test_two_workers_share_counts_and_page_once(
    tmp_path: Path, fakes: tuple[PagerDutyFake, SlackFake]
) -> None:
    """Two gateway instances on one SQLite database (as ``--workers 2`` runs them): each
    sees half of the surge, which alone is ordinary; together it is an anomaly, and it is
    paused and paged exactly once however many of them look."""
    pd, slack = fakes
    clock = Clock(NOW)
    cfg = config(pd)
    async with (
        gateway(tmp_path, cfg, clock, slack) as (one, c1),
        gateway(tmp_path, cfg, clock, slack) as (two, c2),
    ):
        _, key = await tenant_with_history(one, c1, "acme")
        await send(c1, key, 45)  # each alone: 45 in a 9-minute window is 300/h, under 6 x 60
        await send(c2, key, 45)  # together: 600/h
        await one.state.watch.flush()
        clock.now = NOW + MINUTE
        opened = [*(await one.state.watch.check()), *(await two.state.watch.check())]
        opened += await one.state.watch.check()
        assert len(opened) == 1
        assert opened[0].observed == 90 * HOUR // (9 * MINUTE)  # both workers' requests
        await drain(one)
        await drain(two)
        assert len(pd.triggers()) == 1
        assert (await send(c2, key, 1))[0].status_code == 403


async def test_a_tenant_without_history_is_alerted_on_not_paused(
    tmp_path: Path, fakes: tuple[PagerDutyFake, SlackFake]
) -> None:
    pd, slack = fakes
    clock = Clock(NOW)
    async with gateway(tmp_path, config(pd), clock, slack) as (app, client):
        r = await client.post("/admin/v1/tenants", json={"id": "fresh", "plan": "pro"})
        assert r.status_code == 201
        _, key = await new_key(client, "fresh")
        (incident,) = await surge(app, client, clock, key)
        assert incident.target == "none" and incident.detail["learning"] is True
        assert (await send(client, key, 1))[0].status_code == 200
        await drain(app)
        (trigger,) = pd.triggers()
        assert trigger["payload"]["custom_details"]["action"] == "none"


async def test_counts_survive_a_restart(
    tmp_path: Path, fakes: tuple[PagerDutyFake, SlackFake]
) -> None:
    """What one gateway counted (flushed when it stops) is the next one's history."""
    pd, slack = fakes
    clock = Clock(NOW)
    async with gateway(tmp_path, config(pd), clock, slack) as (app, client):
        key_id, key = await tenant_with_history(app, client, "acme")
        await send(client, key, 7)
    async with gateway(tmp_path, config(pd), clock, slack) as (app, client):
        store = app.state.services.store
        (hour,) = [r for r in await store.traffic.history("acme", NOW - 10 * MINUTE)]
        assert (hour.key_id, hour.start, hour.requests) == (key_id, MONDAY + 3 * HOUR, 7)
        assert sum(e.cost for e in await store.ledger("acme")) == hour.spend
