"""Issue [5]: the ledger reaches every billing sink exactly, once, through faults.

Loopback fakes enforce each sink's real format (Stripe's form encoding and identifier rules,
Lago's schema, Metronome's array limit, OpenMeter's content type, the signed webhook). After a
mixed run, each fake holds exactly one event per ledger entry and meter, under its
deterministic key, and its values equal the ledger's to the last unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fakes.billing import LagoFake, MetronomeFake, OpenMeterFake, StripeFake, WebhookFake
from farebox.core.meters import METERS, per_request, render
from farebox.sinks.events import event_key

SECRET = b"whsec-test-secret"
ENV = {"STRIPE_KEY": "sk_test_1", "LAGO_KEY": "lago_1", "METRONOME_KEY": "m_1",
       "OPENMETER_KEY": "om_1", "WEBHOOK_SECRET": SECRET.decode()}  # fmt: skip
BILLING_IDS = {"stripe_customer_id": "cus_{t}", "lago_external_subscription_id": "sub_{t}",
               "metronome_customer_id": "mcust_{t}", "openmeter_subject": "subj_{t}"}  # fmt: skip
PLANS = {"pro": {"models": ["*"], "pricing": {"markup": "1.25"}}}


@contextlib.asynccontextmanager
async def fakes() -> AsyncIterator[dict[str, Any]]:
    async with contextlib.AsyncExitStack() as stack:
        out = {
            "stripe": await stack.enter_async_context(StripeFake(api_key="sk_test_1")),
            "lago": await stack.enter_async_context(LagoFake(api_key="lago_1")),
            "metronome": await stack.enter_async_context(MetronomeFake(api_key="m_1")),
            "openmeter": await stack.enter_async_context(OpenMeterFake(api_key="om_1")),
            "webhook": await stack.enter_async_context(WebhookFake(SECRET)),
        }
        yield out


def config(sinks: dict[str, Any]) -> dict[str, Any]:
    def sink(kind: str, key: str | None) -> dict[str, Any]:
        url = sinks[kind].root_url + ("/hooks/billing" if kind == "webhook" else "")
        out: dict[str, Any] = {"kind": kind, "base_url": url, "max_attempts": 30}
        if key:
            out["api_key"] = f"env:{key}"
        return out

    return {
        "plans": PLANS,
        "default_plan": "pro",
        "billing": {
            "in_serve": False,
            "sinks": {
                "stripe": sink("stripe", "STRIPE_KEY"),
                "lago": sink("lago", "LAGO_KEY"),
                "metronome": sink("metronome", "METRONOME_KEY"),
                "openmeter": sink("openmeter", "OPENMETER_KEY"),
                "webhook": {**sink("webhook", None), "secret": "env:WEBHOOK_SECRET"},
            },
        },
    }


def held(kind: str, fake: Any) -> dict[str, str]:
    """Idempotency key -> value, as the fake recorded it."""
    out = {}
    for key, event in fake.accepted.items():
        if kind == "stripe":
            out[key] = event["payload"]["value"]
        elif kind in ("lago", "metronome"):
            out[key] = str(event["properties"]["value"])
        elif kind == "openmeter":
            out[key.split("\x00", 1)[1]] = str(event["data"]["value"])
        else:
            out[key] = event["value"]
    return out


async def traffic(gw: Any, tenants: list[str]) -> None:
    keys = {}
    for t in tenants:
        keys[t] = await gw.tenant_key(t, plan="pro")
        billing = {k: v.format(t=t) for k, v in BILLING_IDS.items()}
        r = await gw.client.patch(f"/admin/v1/tenants/{t}", headers=gw.admin,
                                  json={"billing": billing})  # fmt: skip
        assert r.status_code == 200, r.text

    async def one(i: int, t: str) -> None:
        auth = {"Authorization": f"Bearer {keys[t]}"}
        if i % 5 == 4:
            body = {"model": "text-embedding-3-small", "input": f"text {i}"}
            r = await gw.client.post("/v1/embeddings", json=body, headers=auth)
        else:
            body = {"model": ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"][i % 3],
                    "messages": [{"role": "user", "content": f"hello {i}"}],
                    "stream": i % 2 == 0}  # fmt: skip
            r = await gw.client.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200, r.text

    await asyncio.gather(*(one(i, tenants[i % len(tenants)]) for i in range(60)))


async def expected(gw: Any) -> dict[str, str]:
    entries = await gw.store.ledger()
    return {event_key(r.tenant, r.unit, r.meter): render(r.meter, r.raw)
            for r in per_request(entries, METERS)}  # fmt: skip


def flaky(sinks: dict[str, Any], gw: Any, throttled: int) -> Any:
    """Every sink fails 30 % of its calls (each with its own 5xx) and throttles its first
    ``throttled``; the exporter's backoff waits are skipped. Returns the exporter."""
    for i, fake in enumerate(sinks.values()):
        fake.failure_rate(0.3, status=(500, 503, 502)[i % 3], seed=i)
        fake.throttle(retry_after="0", times=throttled)
    exporter = gw.app.state.exporter
    exporter._sleep = lambda _s: asyncio.sleep(0)  # the backoff waits are not the point
    return exporter


async def drain(gw: Any, name: str) -> None:
    exporter = gw.app.state.exporter
    for _ in range(200):
        result = await exporter.export_once(name)
        if not result.entries:
            return
    raise AssertionError(f"{name} did not catch up")


async def test_every_sink_holds_exactly_the_ledger(make_gateway: Any) -> None:
    cfg_extra = {
        "providers": {"mock": {"kind": "mock"},
                      "down": {"kind": "mock", "error_rate": 1.0, "error_status": 503}},
        "models": {"broken": [{"provider": "down", "model": "gpt-4o-mini"}]},
    }  # fmt: skip
    async with fakes() as sinks, make_gateway({**config(sinks), **cfg_extra}, env=ENV) as gw:
        await traffic(gw, ["acme", "globex", "initech"])
        key = await gw.tenant_key("failing", plan="pro")
        billing = {k: v.format(t="failing") for k, v in BILLING_IDS.items()}
        await gw.client.patch("/admin/v1/tenants/failing", headers=gw.admin,
                              json={"billing": billing})  # fmt: skip
        for _ in range(3):  # failed upstream calls are in the ledger too (as requests)
            r = await gw.client.post(
                "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                json={"model": "broken", "messages": [{"role": "user", "content": "x"}]},
            )  # fmt: skip
            assert r.status_code == 502
        assert {e.status for e in await gw.ledger("failing")} == {"error"}
        want = await expected(gw)
        assert len(want) > 60 * 3  # requests, tokens, cost, revenue per entry
        for name, fake in sinks.items():
            await drain(gw, name)
            assert held(name, fake) == want, name
            assert not fake.duplicates, name
        status = (await gw.client.get("/admin/v1/export", headers=gw.admin)).json()["sinks"]
        assert all(s["pending_entries"] == 0 and s["lag_s"] == 0 for s in status.values())
        metrics = (await gw.client.get("/admin/v1/metrics", headers=gw.admin)).text
        assert 'farebox_export_pending_entries{sink="stripe"} 0' in metrics
        month = time.strftime("%Y-%m", time.gmtime())
        recon = (await gw.client.get(f"/admin/v1/reconciliation?month={month}",
                                     headers=gw.admin)).json()  # fmt: skip
        assert recon["matched"] and {r["sink"] for r in recon["data"]} == set(sinks)
        cost = [r for r in recon["data"] if r["sink"] == "lago" and r["meter"] == "cost_usd"]
        entries = await gw.store.ledger()
        for row in cost:
            total = sum(e.cost for e in entries if e.tenant_id == row["tenant"])
            assert row["ledger"] == row["delivered"] == render("cost_usd", total)


async def test_faults_lose_nothing_and_duplicate_nothing(make_gateway: Any) -> None:
    async with fakes() as sinks, make_gateway(config(sinks), env=ENV) as gw:
        exporter = flaky(sinks, gw, throttled=3)
        await traffic(gw, ["acme", "globex"])
        want = await expected(gw)
        for name, fake in sinks.items():
            await drain(gw, name)
            assert held(name, fake) == want, name
        # a replay of everything (as after a crash, or an operator's backfill) adds nothing
        for name, fake in sinks.items():
            before = dict(held(name, fake))
            result = await exporter.replay(name, 0, float("inf"))
            assert result.complete and result.dead == 0
            assert held(name, fake) == before == want, name


async def test_permanent_refusals_are_dead_letters_until_retried(make_gateway: Any) -> None:
    async with fakes() as sinks, make_gateway(config(sinks), env=ENV) as gw:
        key = await gw.tenant_key("nobill", plan="pro")  # no billing ids yet
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200
        await drain(gw, "stripe")
        dead = (await gw.client.get("/admin/v1/dead-letters?sink=stripe", headers=gw.admin)).json()
        assert dead["data"] and all("stripe_customer_id" in d["reason"] for d in dead["data"])
        assert sinks["stripe"].accepted == {}
        month = time.strftime("%Y-%m", time.gmtime())
        recon = (await gw.client.get(f"/admin/v1/reconciliation?month={month}",
                                     headers=gw.admin)).json()  # fmt: skip
        stripe = [r for r in recon["data"] if r["sink"] == "stripe"]
        assert not recon["matched"] and all(r["dead"] == r["ledger"] for r in stripe)
        billing = {k: v.format(t="nobill") for k, v in BILLING_IDS.items()}
        await gw.client.patch("/admin/v1/tenants/nobill", headers=gw.admin,
                              json={"billing": billing})  # fmt: skip
        retried = await gw.client.post(
            "/admin/v1/dead-letters/retry", headers=gw.admin, json={"sink": "stripe"}
        )
        assert retried.status_code == 200, retried.text
        body = retried.json()
        assert body["delivered"] == len(dead["data"]) and body["dead"] == 0
        assert held("stripe", sinks["stripe"]) == await expected(gw)
        left = (await gw.client.get("/admin/v1/dead-letters", headers=gw.admin)).json()["data"]
        assert left == []


@pytest.mark.parametrize("kind", ["stripe", "metronome"])
async def test_events_older_than_the_sinks_window_are_reported(
    make_gateway: Any, kind: str
) -> None:
    clock = {"now": 1_800_000_000.0}
    async with fakes() as sinks, make_gateway(config(sinks), env=ENV,
                                              clock=lambda: clock["now"]) as gw:  # fmt: skip
        await traffic(gw, ["acme"])
        clock["now"] += 40 * 86400  # the export ran late: past Stripe's 35 and Metronome's 34 days
        await drain(gw, kind)
        dead = (await gw.client.get(f"/admin/v1/dead-letters?sink={kind}", headers=gw.admin)).json()
        assert len(dead["data"]) == len(await expected(gw))
        assert all("day" in d["reason"] for d in dead["data"]), dead["data"][0]["reason"]
        assert sinks[kind].accepted == {}


async def test_a_killed_exporter_resumes_without_loss_or_duplicates(
    make_gateway: Any, tmp_path: Any
) -> None:
    """``farebox export`` is SIGKILLed mid-batch while sinks answer slowly, 500 and 429 at
    random; a second run finishes the job. Every sink then holds exactly the ledger."""
    import signal
    import sys

    import yaml

    from tests.e2e import child_env

    async with fakes() as sinks:
        chosen = {k: sinks[k] for k in ("stripe", "lago", "openmeter")}
        cfg = config(sinks)
        cfg["billing"]["sinks"] = {k: v for k, v in cfg["billing"]["sinks"].items() if k in chosen}
        async with make_gateway(cfg, env=ENV) as gw:
            await traffic(gw, ["acme", "globex"])
            want = await expected(gw)
        path = tmp_path / "export.yaml"
        path.write_text(yaml.safe_dump({**cfg, "database": f"sqlite:///{tmp_path / 'farebox.db'}"}))
        for name in chosen:
            cfg["billing"]["sinks"][name]["timeout_s"] = 0.5
        path.write_text(yaml.safe_dump({**cfg, "database": f"sqlite:///{tmp_path / 'farebox.db'}"}))
        for i, fake in enumerate(chosen.values()):
            fake.failure_rate(0.25, status=(500, 429, 503)[i], seed=7 + i)
            fake.slow(1.0, times=2)  # past the 0.5 s timeout: recorded, but the exporter gave up
            fake.slow(0.05, times=10_000)  # every answer takes a while: the kill lands mid-batch
        env = {**child_env(), **ENV}
        command = [sys.executable, "-m", "farebox", "export", "--config", str(path)]
        first = await asyncio.create_subprocess_exec(*command, env=env, cwd=str(tmp_path))
        # kill once some, but not all, events have reached the sinks
        for _ in range(2000):
            if any(len(f.accepted) > 10 for f in chosen.values()):
                break
            await asyncio.sleep(0.01)  # waiting on the fakes' own progress
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert any(held(k, f) != want for k, f in chosen.items())  # it was mid-way
        for i, fake in enumerate(chosen.values()):
            fake._delays.clear()  # answers come at once now, still failing at random
            fake.failure_rate(0.1, status=(500, 429, 503)[i], seed=70 + i)
        second = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=str(tmp_path), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(second.communicate(), timeout=120)
        assert second.returncode == 0, out
        for name, fake in chosen.items():
            assert held(name, fake) == want, name  # each key once, with the ledger's value
        # the sink the kill caught mid-way got the killed round again, and deduplicated it
        assert sum(sum(f.duplicates.values()) for f in chosen.values()) > 0


async def test_hourly_aggregates_are_sent_once_the_hour_is_over(make_gateway: Any) -> None:
    from farebox.core.meters import per_hour

    clock = {"now": 1_800_000_000.0 + 120}  # two minutes into an hour
    async with fakes() as sinks:
        cfg = config(sinks)
        cfg["billing"]["sinks"] = {"lago": {**cfg["billing"]["sinks"]["lago"],
                                            "granularity": "hour"}}  # fmt: skip
        async with make_gateway(cfg, env=ENV, clock=lambda: clock["now"]) as gw:
            await traffic(gw, ["acme", "globex"])
            exporter = gw.app.state.exporter
            assert (await exporter.export_once("lago")).entries == 0  # the hour is not over
            clock["now"] += 3600  # over, but within the grace for late writes
            assert (await exporter.export_once("lago")).entries == 0
            clock["now"] += 600
            result = await exporter.export_once("lago")
            assert result.complete and result.entries == 60
            sums = per_hour(await gw.store.ledger(), METERS)
            want = {event_key(r.tenant, r.unit, r.meter): render(r.meter, r.raw) for r in sums}
            assert held("lago", sinks["lago"]) == want
            assert len(want) == 2 * len(METERS) - 2  # no cache hits: one zero meter per tenant
            assert (await exporter.export_once("lago")).entries == 0  # nothing sent twice


async def test_entries_from_before_a_sink_existed_are_exported_by_replay(
    make_gateway: Any,
) -> None:
    async with fakes() as sinks:
        plain = {k: v for k, v in config(sinks).items() if k != "billing"}
        async with make_gateway(plain, env=ENV) as gw:  # no sink: no outbox rows are kept
            await traffic(gw, ["acme"])
        async with make_gateway(config(sinks), env=ENV) as gw:
            exporter = gw.app.state.exporter
            assert (await exporter.export_once("metronome")).entries == 0
            result = await exporter.replay("metronome", 0, float("inf"))
            assert result.complete and result.entries == 60
            assert held("metronome", sinks["metronome"]) == await expected(gw)


async def test_one_process_exports_a_database(tmp_path: Any) -> None:
    from farebox.stores.sqlite.store import SQLiteStore

    first, second = SQLiteStore(tmp_path / "f.db"), SQLiteStore(tmp_path / "f.db")
    await first.open()
    await second.open()
    try:
        assert await first.claim_exporter() and await first.claim_exporter()
        assert not await second.claim_exporter()
        await first.set_export_cursor("s", 10)
        await first.set_export_cursor("s", 4)  # a slower, older round never moves it back
        assert await second.export_cursor("s") == 10
    finally:
        await first.close()
    try:
        assert await second.claim_exporter()  # free once the exporter's store is closed
    finally:
        await second.close()


async def test_stripe_v2_stream_with_session_renewal(make_gateway: Any) -> None:
    fake_clock = {"now": time.time()}
    async with StripeFake(api_key="sk_test_1", now=lambda: fake_clock["now"]) as stripe:
        sinks = {"stripe": stripe}
        cfg = {
            "plans": PLANS, "default_plan": "pro",
            "billing": {"in_serve": False, "sinks": {"stripe": {
                "kind": "stripe", "api": "v2", "base_url": stripe.root_url,
                "stream_url": stripe.root_url, "api_key": "env:STRIPE_KEY", "max_attempts": 5,
            }}},
        }  # fmt: skip
        async with make_gateway(cfg, env=ENV) as gw:
            await traffic(gw, ["acme"])
            await drain(gw, "stripe")
            assert held("stripe", sinks["stripe"]) == await expected(gw)
            assert len(stripe.sessions) == 1 and not stripe.async_errors
            fake_clock["now"] += 1000  # Stripe ends the 15-minute session
            await traffic(gw, ["globex"])
            await drain(gw, "stripe")  # a 401 session_expired, then a new session
            assert held("stripe", sinks["stripe"]) == await expected(gw)
            assert len(stripe.sessions) == 2


async def test_redis_stream_sink_adds_each_event_once(make_gateway: Any) -> None:
    import os
    import uuid

    import orjson
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379, db=9)
    try:
        await client.ping()
    except Exception:
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            raise
        pytest.skip("Redis on 127.0.0.1:6379 is not running: the Redis stream sink is untested")
    stream = f"fbx-test-{uuid.uuid4().hex[:8]}"
    cfg = {"plans": PLANS, "default_plan": "pro", "billing": {"in_serve": False, "sinks": {
        "redis": {"kind": "redis_stream", "base_url": "redis://127.0.0.1:6379/9",
                  "stream": stream}}}}  # fmt: skip
    try:
        async with make_gateway(cfg, env=ENV) as gw:
            await traffic(gw, ["acme", "globex"])
            await drain(gw, "redis")
            want = await expected(gw)
            entries = await client.xrange(stream)
            got = {f[b"key"].decode(): orjson.loads(f[b"event"])["value"] for _, f in entries}
            assert got == want and len(entries) == len(want)
            replayed = await gw.app.state.exporter.replay("redis", 0, float("inf"))
            assert replayed.complete and await client.xlen(stream) == len(want)
    finally:
        await client.delete(stream)
        async for key in client.scan_iter(match=f"{{{stream}}}:sent:*"):
            await client.delete(key)
        await client.aclose()


async def test_dead_letters_raise_a_signed_alert(make_gateway: Any) -> None:
    from tests.test_budget_sdk import receiver

    async with fakes() as sinks, receiver() as hook:
        cfg = config(sinks)
        cfg["budgets"] = {"alert_webhook_url": hook.url, "alert_webhook_secret": "env:HOOK"}
        async with make_gateway(cfg, env={**ENV, "HOOK": "alert-secret"}) as gw:
            key = await gw.tenant_key("nobill", plan="pro")  # no billing ids: dead letters
            r = await gw.client.post(
                "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            )  # fmt: skip
            assert r.status_code == 200
            await drain(gw, "metronome")
            for _ in range(500):  # the alert is sent in the background: up to 10 s
                if hook.received:
                    break
                await asyncio.sleep(0.02)
    headers, body = hook.received[0]
    import orjson

    event = orjson.loads(body)
    assert event["type"] == "billing.dead_letters" and event["sink"] == "metronome"
    assert event["tenants"] == ["nobill"] and "metronome_customer_id" in event["reasons"][0]
    assert {k.lower(): v for k, v in headers.items()}["x-farebox-signature"].startswith("t=")
