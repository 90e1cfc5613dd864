"""Review fixes for account multiplication and the scope ip limits (issue 15, review 3.1,
3.2, 3.3, 3.6), in process with an injected clock; rounds are run by calling ``check``.

- 3.1: ``X-Farebox-Device`` never replaces the client IP for a rate limit, and account
  multiplication counts the IP and the device, each a client of its own.
- 3.2: while a client's incident is open, tenants it goes on to use are paused too.
- 3.3: an incident pauses only what is not paused yet, and resolving it resumes only what
  it paused, while the pause is still its own.
- 3.6: ``across_tenants`` is refused in tenant, workspace and key overrides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.paging import PagerDutyFake
from farebox.config.settings import RateLimitConfig
from farebox.core.anomaly import Incident
from farebox.gateway.rate_limits import RateLimits, holds, to_spec
from tests.test_account_multiplication import (
    ACROSS,
    ATTACKER,
    ROUTING_KEY,
    T0,
    Clock,
    chat,
    client,
    config,
    gateway,
    sightings_watch,
    tenants,
)

PROXY = "10.0.0.5"  # in server.trusted_proxies: a pass-through edge (nginx, an ALB)
VIA = {"X-Forwarded-For": ATTACKER}


@pytest.fixture
async def pd() -> AsyncIterator[PagerDutyFake]:
    async with PagerDutyFake(ROUTING_KEY) as fake:
        yield fake


async def paused(admin: httpx.AsyncClient, tenant_id: str) -> tuple[bool, str | None]:
    t = (await admin.get(f"/admin/v1/tenants/{tenant_id}")).json()
    return t["paused"], t["pause_reason"]


# --- 3.1: the device never replaces the IP --------------------------------------------------
async def test_a_fresh_device_per_request_does_not_escape_a_scope_ip_limit(
    tmp_path: Path,
) -> None:
    limits = [{"scope": "ip", "requests_per_minute": 3}]
    cfg = config(None, free_limits=limits, enabled=False)
    async with gateway(tmp_path, cfg, Clock()) as app, client(app) as admin:
        (_kid, key), *_ = (await tenants(admin, 1)).values()
        got = [(await chat(app, key, PROXY, **VIA, **{"X-Farebox-Device": f"d{i}"})).status_code
               for i in range(5)]  # fmt: skip
        assert got == [200, 200, 200, 429, 429]


async def test_a_fresh_device_per_request_does_not_escape_the_across_limit(
    tmp_path: Path,
) -> None:
    cfg = config(None, free_limits=ACROSS, enabled=False)
    async with gateway(tmp_path, cfg, Clock()) as app, client(app) as admin:
        keys = [k for _, k in (await tenants(admin, 6)).values()]
        got = [(await chat(app, keys[i % 6], PROXY, **VIA, **{"X-Farebox-Device": f"d{i}"})
                ).status_code for i in range(12)]  # fmt: skip
        assert got == [200] * 10 + [429] * 2


async def test_a_fresh_device_per_request_does_not_hide_the_ip_from_multiplication(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, config(None), Clock()) as app, client(app) as admin:
        made = await tenants(admin, 8)
        for i, (_kid, key) in enumerate(made.values()):
            r = await chat(app, key, PROXY, **VIA, **{"X-Farebox-Device": f"fresh-{i}"})
            assert r.status_code == 200
        (incident,) = await sightings_watch(app).check()  # the devices: one tenant each
        assert incident.detail["client"] == ATTACKER
        assert sorted(incident.detail["paused_tenants"]) == sorted(made)


async def test_the_ip_and_the_device_seen_together_open_one_incident(tmp_path: Path) -> None:
    """One IP and one device over six tenants, on the same requests: linked, one client, so
    one incident (its clients: both) that paused everything (test_abuse_linked_clients.py
    has the page and the later crossings)."""
    async with gateway(tmp_path, config(None), Clock()) as app, client(app) as admin:
        made = await tenants(admin, 6)
        for _kid, key in made.values():
            r = await chat(app, key, PROXY, **VIA, **{"X-Farebox-Device": "fp-1"})
            assert r.status_code == 200
        (incident,) = await sightings_watch(app).check()
        assert incident.detail["clients"] == sorted([ATTACKER, "device:fp-1"])
        assert sorted(incident.detail["paused_tenants"]) == sorted(made)
        listed = (await admin.get("/admin/v1/anomalies")).json()["data"]
        assert [i["id"] for i in listed] == [incident.id]


def test_only_a_service_keys_across_limit_counts_its_device() -> None:
    spec, per_tenant = to_spec(ACROSS[0]), to_spec({"scope": "ip", "requests_per_minute": 3})
    args: dict[str, Any] = {"user": None, "model": "m", "now": T0, "plan": "free"}
    tenant_key = holds([spec, per_tenant], tenant="a", key="k", ip=ATTACKER, device="fp",
                       **args)  # fmt: skip
    assert [h.key for h in tenant_key] == [f"rl:ip:*:free:{ATTACKER}:*:requests:60",
                                           f"rl:ip:a:{ATTACKER}:*:requests:60"]  # fmt: skip
    service = holds([spec, per_tenant], tenant="a", key="s", ip=ATTACKER, device="fp",
                    shared_key=True, **args)  # fmt: skip
    assert [h.key for h in service] == ["rl:ip:*:free:device:fp:*:requests:60",
                                        f"rl:ip:a:{ATTACKER}:*:requests:60"]  # fmt: skip
    bare = holds([spec], tenant="a", key="s", ip=ATTACKER, shared_key=True, **args)
    assert bare == []  # the SaaS's own server is no client


# --- 3.2: the tenants used after the incident opened -----------------------------------------
async def test_new_tenants_after_the_incident_are_paused_and_resumed_with_it(
    tmp_path: Path, pd: PagerDutyFake
) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        made = await tenants(admin, 6)
        for _kid, key in made.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        watch = sightings_watch(app)
        (incident,) = await watch.check()
        later = await tenants(admin, 3, prefix="n")
        clock.now += 120
        for _kid, key in later.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        assert await watch.check() == []  # no second incident, no second page...
        for tid, (_kid, key) in later.items():  # ...but the new tenants are paused
            is_paused, reason = await paused(admin, tid)
            assert is_paused and reason is not None and incident.id in reason
            assert (await chat(app, key, "198.51.100.3")).status_code == 403
        r = await admin.post(f"/admin/v1/anomalies/{incident.id}/resolve")
        assert r.status_code == 200, r.text
        for tid in [*made, *later]:
            assert (await paused(admin, tid))[0] is False
        await app.state.watch.pager.aclose(5.0)
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]


async def test_a_resolved_incident_pauses_no_new_tenant(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        for _kid, key in (await tenants(admin, 6)).values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        watch = sightings_watch(app)
        (incident,) = await watch.check()
        r = await admin.post(f"/admin/v1/anomalies/{incident.id}/resolve")  # a false positive
        assert r.status_code == 200
        later = await tenants(admin, 2, prefix="n")
        clock.now += 120
        for _kid, key in later.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        assert await watch.check() == []
        for tid in later:
            assert (await paused(admin, tid))[0] is False


# --- 3.3: other pauses are left alone ---------------------------------------------------------
async def test_an_operators_pause_is_neither_overwritten_nor_resumed(tmp_path: Path) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        made = await tenants(admin, 6)
        for _kid, key in made.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        # t0 was paused by an operator before the round
        r = await admin.post("/admin/v1/tenants/t0/pause", json={"reason": "non-payment"})
        assert r.status_code == 200, r.text
        (incident,) = await sightings_watch(app).check()
        assert sorted(incident.detail["paused_tenants"]) == [f"t{i}" for i in range(1, 6)]
        assert await paused(admin, "t0") == (True, "non-payment")
        # t1, paused by the incident, is paused again by the operator for fraud
        r = await admin.post("/admin/v1/tenants/t1/pause", json={"reason": "fraud"})
        assert r.status_code == 200, r.text
        r = await admin.post(f"/admin/v1/anomalies/{incident.id}/resolve")
        assert r.status_code == 200, r.text
        assert await paused(admin, "t0") == (True, "non-payment")
        assert await paused(admin, "t1") == (True, "fraud")
        for tid in ("t2", "t3", "t4", "t5"):
            assert (await paused(admin, tid))[0] is False


async def test_the_incident_is_listed_even_when_its_last_tenant_has_one_open(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        made = await tenants(admin, 6)
        for _kid, key in made.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        other = Incident("anom_other", "t5", "", "none", "", "requests", 9, 1, 2, T0, "x")
        assert await app.state.services.store.traffic.open_incident(other, float("inf"))
        (incident,) = await sightings_watch(app).check()
        assert incident.tenant_id != "t5" and incident.tenant_id in made
        listed = (await admin.get("/admin/v1/anomalies")).json()["data"]
        assert incident.id in [i["id"] for i in listed]


# --- 3.6: across_tenants belongs to a plan ---------------------------------------------------
async def test_across_tenants_is_refused_in_every_override(tmp_path: Path) -> None:
    across = [{"scope": "ip", "requests_per_minute": 5, "across_tenants": True}]
    async with gateway(tmp_path, config(None), Clock()) as app, client(app) as admin:
        ((kid, _key),) = (await tenants(admin, 1)).values()
        targets = [
            ("patch", "/admin/v1/tenants/t0"),
            ("patch", f"/admin/v1/keys/{kid}"),
            ("patch", "/admin/v1/tenants/t0/workspaces/default"),
            ("post", "/admin/v1/tenants/t0/workspaces"),
        ]
        for method, url in targets:
            body: dict[str, Any] = {"rate_limits": across}
            if method == "post":
                body["id"] = "w2"
            r = await admin.request(method.upper(), url, json=body)
            assert r.status_code == 400, (url, r.text)
            assert r.json()["error"]["param"] == "rate_limits[0].across_tenants", url
            assert "plan" in r.json()["error"]["message"]
        plain = [{"scope": "ip", "requests_per_minute": 5}]  # a per-tenant ip limit is fine
        assert (await admin.patch("/admin/v1/tenants/t0",
                                  json={"rate_limits": plain})).status_code == 200  # fmt: skip


def test_an_override_stored_before_never_counts_across_tenants() -> None:
    limits = RateLimits({"free": [RateLimitConfig.model_validate(ACROSS[0])]})
    stored = [{"scope": "ip", "requests_per_minute": 1000, "across_tenants": True}]
    specs = limits.specs("free", tenant_limits=stored)
    assert [(s.requests, s.across_tenants) for s in specs] == [(10, True)]  # the plan's


async def test_pause_key_goes_on_for_new_keys_and_resumes_only_its_own(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(None, action="pause_key", max_tenants=2)
    async with gateway(tmp_path, cfg, clock) as app, client(app) as admin:
        made = await tenants(admin, 3)
        for _kid, key in made.values():
            assert (await chat(app, key, ATTACKER)).status_code == 200
        first_key = made["t0"][0]
        r = await admin.post(f"/admin/v1/keys/{first_key}/pause", json={"reason": "leaked"})
        assert r.status_code == 200, r.text
        (incident,) = await sightings_watch(app).check()
        assert sorted(incident.detail["paused_keys"]) == sorted([made["t1"][0], made["t2"][0]])
        later = await tenants(admin, 1, prefix="n")
        clock.now += 120
        assert (await chat(app, later["n0"][1], ATTACKER)).status_code == 200
        assert await sightings_watch(app).check() == []
        refused = await chat(app, later["n0"][1], "198.51.100.3")
        assert refused.json()["error"]["code"] == "key_paused"  # the new key, paused too
        r = await admin.post(f"/admin/v1/anomalies/{incident.id}/resolve")
        assert r.status_code == 200, r.text
        for tid in ("t1", "t2", "n0"):
            assert (await chat(app, {**made, **later}[tid][1], "198.51.100.3")).status_code == 200
        key = await app.state.services.store.get_key(first_key)
        assert key.paused is True and key.pause_reason == "leaked"  # the operator's
