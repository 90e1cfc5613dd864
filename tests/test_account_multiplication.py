"""Account multiplication (issue 15, acceptance 4), in process: one client (an IP, or the
``X-Farebox-Device`` a trusted proxy names) using keys of more than five free-plan tenants
within a day opens ONE anomaly incident of kind ``account_multiplication``, applies the
configured action and pages once (the loopback PagerDuty fake); five tenants open none. A
rate limit of scope ip ``across_tenants`` counts the client once for every tenant of its plan.

The clock is injected; detection rounds are run by calling the watch's ``check``. The
multi-process and multi-replica halves are in ``test_account_multiplication_serve.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.paging import PagerDutyFake, pagerduty_errors
from farebox.app import create_app
from farebox.config.settings import parse_settings
from farebox.gateway.rate_limits import IP_SHARDS, across_owner, holds, to_spec
from farebox.stores.memory.multiplication import MemorySightings
from farebox.stores.multiplication import Sighting
from farebox.stores.sqlite.store import SQLiteStore
from tests.conftest import ADMIN_KEY

T0 = 1_800_000_000.0
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
MOCK = {"sim": {"kind": "mock", "seed": 3, "output_tokens": {"distribution": "fixed", "mean": 5}}}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
ATTACKER = "203.0.113.7"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(pd: PagerDutyFake | None, *, free_limits: list[dict[str, Any]] | None = None,
           **multiplication: Any) -> dict[str, Any]:  # fmt: skip
    anomaly: dict[str, Any] = {
        "check_interval_s": 3600,  # rounds are run by the test
        "retry_backoff_s": 0.01,
        "account_multiplication": multiplication,
    }
    if pd is not None:
        anomaly["pagerduty"] = {"routing_key": "env:PD_KEY", "base_url": pd.root_url}
    return {
        "providers": MOCK,
        "models": {"gpt-4o-mini": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "plans": {
            "free": {"models": ["*"], "rate_limits": free_limits or []},
            "pro": {"models": ["*"]},
        },  # fmt: skip
        "default_plan": "pro",
        "server": {"trusted_proxies": ["10.0.0.0/8"]},
        "anomaly": anomaly,
    }


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, cfg: dict[str, Any], clock: Clock) -> AsyncIterator[Any]:
    data = {"database": f"sqlite:///{tmp_path / 'farebox.db'}", **cfg}
    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY, "PD_KEY": ROUTING_KEY}
    settings = parse_settings(data, source="test.yaml", env=env, base_dir=tmp_path)
    app = create_app(settings, clock=clock, announce=lambda _m: None)
    async with app.router.lifespan_context(app):
        yield app


@contextlib.asynccontextmanager
async def client(app: Any, peer: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(peer, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        c.headers["authorization"] = f"Bearer {ADMIN_KEY}"
        yield c


async def tenants(c: httpx.AsyncClient, count: int, plan: str = "free",
                  prefix: str = "t") -> dict[str, tuple[str, str]]:  # fmt: skip
    """``count`` tenants on ``plan``: tenant id -> (key id, raw key)."""
    out = {}
    for i in range(count):
        tid = f"{prefix}{i}"
        assert (
            await c.post("/admin/v1/tenants", json={"id": tid, "plan": plan})
        ).status_code == 201
        r = await c.post(f"/admin/v1/tenants/{tid}/keys", json={"name": "k"})
        assert r.status_code == 201, r.text
        out[tid] = (r.json()["id"], r.json()["key"])
    return out


async def chat(app: Any, key: str, peer: str, **headers: str) -> httpx.Response:
    async with client(app, peer) as c:
        return await c.post("/v1/chat/completions", json=CHAT,
                            headers={"authorization": f"Bearer {key}", **headers})  # fmt: skip


def sightings_watch(app: Any) -> Any:
    watch = app.state.services.sightings
    assert watch is not None
    return watch


@pytest.fixture
async def pd() -> AsyncIterator[PagerDutyFake]:
    async with PagerDutyFake(ROUTING_KEY) as fake:
        yield fake


def via(ip: str, device: str | None = None) -> dict[str, str]:
    """The headers of a request from ``ip`` (through the trusted proxy), naming ``device``."""
    headers = {"X-Forwarded-For": ip}
    if device is not None:
        headers["X-Farebox-Device"] = device
    return headers


# --- the incident -----------------------------------------------------------------------
async def test_one_ip_six_free_tenants_opens_one_incident_pauses_all_pages_once(
    tmp_path: Path, pd: PagerDutyFake
) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        made = await tenants(admin, 6)
        await tenants(admin, 2, plan="pro", prefix="paid")  # never counted, never paused
        for _tid, (_kid, key) in made.items():
            for _ in range(3):  # several requests per tenant: still one sighting each
                assert (await chat(app, key, ATTACKER)).status_code == 200
        watch = sightings_watch(app)
        clock.now += 60
        opened = await watch.check()
        assert len(opened) == 1
        incident = opened[0]
        assert incident.metric == "account_multiplication"
        assert incident.observed == 6 and incident.threshold == 5
        assert incident.target == "tenant"
        assert incident.detail["client"] == ATTACKER
        assert sorted(incident.detail["paused"]) == sorted(made)
        assert incident.dedup_key == f"farebox/account_multiplication/{ATTACKER}"
        # every free tenant the IP used is paused, with the incident as the reason
        for tid, (_kid, key) in made.items():
            t = (await admin.get(f"/admin/v1/tenants/{tid}")).json()
            assert t["paused"] is True and incident.id in t["pause_reason"]
            refused = await chat(app, key, "198.51.100.1")  # from anywhere now
            assert refused.status_code == 403
        for tid in ("paid0", "paid1"):
            assert (await admin.get(f"/admin/v1/tenants/{tid}")).json()["paused"] is False
        # later rounds open nothing more and page nothing more
        clock.now += 600
        assert await watch.check() == []
        await watch.check()
        await app.state.watch.pager.aclose(5.0)
        listed = (await admin.get("/admin/v1/anomalies")).json()["data"]
    assert [i["id"] for i in listed] == [incident.id]
    assert listed[0]["metric"] == "account_multiplication"
    assert "account multiplication" in listed[0]["summary"]
    assert len(pd.events) == 1  # paged once
    event = pd.events[0]
    assert pagerduty_errors(event, ROUTING_KEY) == []
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == f"farebox/account_multiplication/{ATTACKER}"
    assert event["payload"]["custom_details"]["client"] == ATTACKER
    assert event["payload"]["custom_details"]["tenants"] == sorted(made)


async def test_resolving_the_incident_resumes_every_tenant_it_paused(
    tmp_path: Path, pd: PagerDutyFake
) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        made = await tenants(admin, 6)
        for _kid, key in made.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        (incident,) = await sightings_watch(app).check()
        assert sorted(incident.detail["paused_tenants"]) == sorted(made)
        assert incident.detail["paused_keys"] == []
        r = await admin.post(f"/admin/v1/anomalies/{incident.id}/resolve")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "resolved"
        for _kid, key in made.values():
            assert (await chat(app, key, "198.51.100.8")).status_code == 200
        await app.state.watch.pager.aclose(5.0)
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]
    assert pd.events[1]["dedup_key"] == incident.dedup_key


async def test_five_free_tenants_open_none(tmp_path: Path, pd: PagerDutyFake) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        made = await tenants(admin, 5)
        paid = await tenants(admin, 3, plan="pro", prefix="paid")  # other plans do not count
        for _kid, key in [*made.values(), *paid.values()]:
            assert (await chat(app, key, ATTACKER)).status_code == 200
        assert await sightings_watch(app).check() == []
        for tid in made:
            assert (await admin.get(f"/admin/v1/tenants/{tid}")).json()["paused"] is False
        # a sixth free tenant from ANOTHER IP changes nothing for this one
        other = await tenants(admin, 1, prefix="x")
        assert (await chat(app, other["x0"][1], "198.51.100.2")).status_code == 200
        assert await sightings_watch(app).check() == []
        await app.state.watch.pager.aclose(5.0)
        assert (await admin.get("/admin/v1/anomalies")).json()["data"] == []
    assert pd.events == []


async def test_sightings_older_than_the_window_do_not_count(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        made = list((await tenants(admin, 6)).values())
        for _kid, key in made[:3]:
            assert (await chat(app, key, ATTACKER)).status_code == 200
        watch = sightings_watch(app)
        await watch.flush()
        clock.now += 86_400 + 1  # a day later: those three have left the window
        for _kid, key in made[3:]:
            assert (await chat(app, key, ATTACKER)).status_code == 200
        assert await watch.check() == []
        assert (await chat(app, made[0][1], ATTACKER)).status_code == 200  # back: four
        assert await watch.check() == []


async def test_pause_key_pauses_the_keys_used_not_the_tenants(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(None, action="pause_key", max_tenants=2)
    async with gateway(tmp_path, cfg, clock) as app, client(app) as admin:
        made = await tenants(admin, 3)
        for _kid, key in made.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        (incident,) = await sightings_watch(app).check()
        assert incident.target == "key"
        assert sorted(incident.detail["paused"]) == sorted(k for k, _ in made.values())
        assert incident.detail["paused_tenants"] == []
        for tid, (kid, key) in made.items():
            assert (await admin.get(f"/admin/v1/tenants/{tid}")).json()["paused"] is False
            assert (await chat(app, key, "198.51.100.3")).json()["error"]["code"] == "key_paused"


async def test_alert_pauses_nothing(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(None, action="alert"), clock) as app, client(app) as admin:
        made = await tenants(admin, 6)
        for _kid, key in made.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        (incident,) = await sightings_watch(app).check()
        assert incident.target == "none" and incident.detail["paused"] == []
        assert (await chat(app, made["t0"][1], ATTACKER)).status_code == 200


async def test_a_device_named_by_a_trusted_proxy_is_the_client(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        made = list((await tenants(admin, 6)).values())
        # six tenants from six IPs behind the proxy, one device: one client
        for i, (_kid, key) in enumerate(made):
            r = await chat(app, key, "10.0.0.5", **{"X-Forwarded-For": f"192.0.2.{i + 1}",
                                                   "X-Farebox-Device": "fp-abc"})  # fmt: skip
            assert r.status_code == 200
        (incident,) = await sightings_watch(app).check()
        assert incident.detail["client"] == "device:fp-abc"


async def test_a_device_header_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        made = list((await tenants(admin, 6)).values())
        for i, (_kid, key) in enumerate(made):  # six IPs of their own: six clients
            r = await chat(app, key, f"198.51.100.{i + 1}", **{"X-Farebox-Device": "fp-abc"})
            assert r.status_code == 200
        assert await sightings_watch(app).check() == []
        # the one IP with a fresh device on every request is still one client
        for i, (_kid, key) in enumerate(made):
            r = await chat(app, key, ATTACKER, **{"X-Farebox-Device": f"fresh-{i}"})
            assert r.status_code == 200
        (incident,) = await sightings_watch(app).check()
        assert incident.detail["client"] == ATTACKER


async def test_a_service_keys_own_device_header_is_believed(tmp_path: Path) -> None:
    """The SaaS's backend calls for its users with its service key, from one server IP: the
    device it names tells its users apart (and brings one user's tenants together)."""
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        made = await tenants(admin, 6)
        r = await admin.post("/admin/v1/service-keys", json={"name": "backend"})
        assert r.status_code == 201, r.text
        service = r.json()["key"]
        for tid in made:
            for device in ("user-a", f"user-{tid}"):  # user-a on every tenant; others on one
                got = await chat(app, service, "198.51.100.20", **{
                    "X-Farebox-Tenant": tid, "X-Farebox-Device": device})  # fmt: skip
                assert got.status_code == 200, got.text
        (incident,) = await sightings_watch(app).check()
        assert incident.detail["client"] == "device:user-a"  # not the server's IP


async def test_a_service_keys_bare_ip_is_never_one_client(tmp_path: Path) -> None:
    """Without a device, a service key's requests come from the SaaS's own server: neither
    a multiplying client nor one client for the cross-tenant limit."""
    cfg = config(None, free_limits=ACROSS)
    async with gateway(tmp_path, cfg, Clock()) as app, client(app) as admin:
        made = await tenants(admin, 6)
        r = await admin.post("/admin/v1/service-keys", json={"name": "backend"})
        service = r.json()["key"]
        statuses = [(await chat(app, service, "198.51.100.20", **{"X-Farebox-Tenant": tid})
                     ).status_code for tid in made for _ in range(2)]  # fmt: skip
        assert statuses == [200] * 12  # more than the 10 a client may send
        assert await sightings_watch(app).check() == []
        # the same IP with a tenant's own key is a client like any other
        assert (await chat(app, made["t0"][1], "198.51.100.20")).status_code == 200


# --- the cross-tenant IP limit ------------------------------------------------------------
ACROSS = [{"scope": "ip", "requests_per_minute": 10, "across_tenants": True}]


async def test_an_ip_is_one_client_across_every_free_tenant(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(None, free_limits=ACROSS, enabled=False)
    async with gateway(tmp_path, cfg, clock) as app, client(app) as admin:
        keys = [k for _, k in (await tenants(admin, 6)).values()]
        paid = [k for _, k in (await tenants(admin, 1, plan="pro", prefix="p")).values()]
        statuses = [(await chat(app, keys[i % 6], ATTACKER)).status_code for i in range(12)]
        assert statuses == [200] * 10 + [429] * 2
        refused = await chat(app, keys[5], ATTACKER)
        assert refused.json()["error"]["limit"]["scope"] == "ip"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert (await chat(app, keys[0], "198.51.100.9")).status_code == 200  # another IP
        assert (await chat(app, paid[0], ATTACKER)).status_code == 200  # another plan
        clock.now += 63  # the window has passed
        assert (await chat(app, keys[3], ATTACKER)).status_code == 200


async def test_devices_behind_one_proxy_ip_share_its_limit(tmp_path: Path) -> None:
    """The device never replaces the IP for a rate limit (review 3.1): behind a proxy that
    passes headers on, a client could make one up per request."""
    cfg = config(None, free_limits=ACROSS, enabled=False)
    async with gateway(tmp_path, cfg, Clock()) as app, client(app) as admin:
        keys = [k for _, k in (await tenants(admin, 2)).values()]
        via = {"X-Forwarded-For": ATTACKER}
        got = [(await chat(app, keys[i % 2], "10.0.0.5", **via, **{"X-Farebox-Device":
                f"d{i % 2}"})).status_code for i in range(11)]  # fmt: skip
        assert got == [200] * 10 + [429]


async def test_across_tenants_is_a_plans_only_in_the_admin_api(tmp_path: Path) -> None:
    async with gateway(tmp_path, config(None), Clock()) as app, client(app) as admin:
        await tenants(admin, 1)
        for scope in ("key", "ip"):  # an override never counts across tenants (review 3.6)
            bad = [{"scope": scope, "requests_per_minute": 5, "across_tenants": True}]
            r = await admin.patch("/admin/v1/tenants/t0", json={"rate_limits": bad})
            assert r.status_code == 400 and "across_tenants" in r.text


def test_the_across_counter_names_the_plan_and_client_not_the_tenant() -> None:
    spec = to_spec(ACROSS[0])
    made = [holds([spec], tenant=t, key=f"k{t}", user=None, ip=ATTACKER, model="m", now=T0,
                  plan="free")[0] for t in ("a", "b")]  # fmt: skip
    assert made[0].key == made[1].key == f"rl:ip:*:free:{ATTACKER}:*:requests:60"
    assert made[0].tenant == made[1].tenant == across_owner(ATTACKER)  # its own Redis slot
    assert made[0].tenant.startswith("~ip.")
    other_plan = holds([spec], tenant="a", key="k", user=None, ip=ATTACKER, model="m", now=T0,
                       plan="pro")[0]  # fmt: skip
    assert other_plan.key != made[0].key
    shards = {across_owner(f"198.51.100.{i}") for i in range(256)}
    assert 32 < len(shards) <= IP_SHARDS  # spread over the slots


# --- the store role ---------------------------------------------------------------------
async def _exercise(store: Any) -> None:
    rows = [Sighting("c1", f"t{i}", "k", T0 + i) for i in range(6)]
    rows += [Sighting("c2", "t0", "k", T0), Sighting("c1", "t0", "k", T0 - 5)]  # older: kept
    await store.add(rows)
    assert await store.crowded(T0, 5) == ["c1"]
    assert await store.crowded(T0 + 1, 5) == []  # t0's last sighting is before
    assert await store.crowded(T0, 6) == []
    assert await store.crowded(T0, 5, touched=T0 + 5) == ["c1"]  # c1 was seen at T0 + 5
    assert await store.crowded(T0, 5, touched=T0 + 6) == []  # not since
    seen = await store.sightings("c1", T0)
    assert [s.tenant_id for s in seen] == [f"t{i}" for i in range(6)]
    assert seen[0].seen_at == T0  # the latest of t0's two
    assert await store.claim("c1", T0, T0 - 100) is True
    assert await store.claim("c1", T0 + 1, T0 - 100) is False  # claimed within the window
    assert await store.claim("c2", T0 + 1, T0 - 100) is True
    assert await store.claim("c1", T0 + 200, T0 + 100) is True  # the window has passed
    await store.prune(T0 + 3)
    assert [s.tenant_id for s in await store.sightings("c1", 0)] == ["t3", "t4", "t5"]


async def test_memory_sightings() -> None:
    await _exercise(MemorySightings())


async def test_sqlite_sightings(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        await _exercise(store.multiplication)
    finally:
        await store.close()


async def test_postgres_sightings_and_one_claim_among_racers() -> None:
    import uuid

    from tests.outage import dsn, fresh_databases, require_services

    require_services()
    from farebox.stores.postgres.store import PostgresStore

    with fresh_databases(1) as (name,):
        store = PostgresStore(dsn(name), schema=f"mult_{uuid.uuid4().hex[:8]}", pool_min=1,
                              pool_max=8)  # fmt: skip
        await store.open()
        try:
            await _exercise(store.multiplication)
            wins = await asyncio.gather(*(store.multiplication.claim("race", T0, T0 - 60)
                                          for _ in range(16)))  # fmt: skip
            assert sorted(wins) == [False] * 15 + [True]
        finally:
            await store.close()


async def test_sqlite_one_claim_among_racers(tmp_path: Path) -> None:
    stores = [SQLiteStore(tmp_path / "s.db") for _ in range(2)]  # two processes' worth
    for store in stores:
        await store.open()
    try:
        wins = await asyncio.gather(*(s.multiplication.claim("race", T0, T0 - 60)
                                      for s in stores for _ in range(8)))  # fmt: skip
        assert sorted(wins) == [False] * 15 + [True]
    finally:
        for store in stores:
            await store.close()
