"""Account multiplication: an IP and a device seen on the same requests are ONE client.

- One IP and one device over six free tenants, in the same burst: one incident (its
  ``clients``: both), one page, one listed anomaly.
- An incident opened for the IP alone covers a device first linked to it later: the device
  crossing the limit (from other IPs too) extends that incident (its tenants are paused under
  it, resolving resumes them), no second incident, no second page.
- The store role: links are not tenants; ``claim_all`` claims a group all or nothing, and
  of racing groups that share a client exactly one wins (SQLite, PostgreSQL).

In process with an injected clock; rounds are run by calling the watch's ``check``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fakes.paging import PagerDutyFake
from farebox.stores.multiplication import LINK, Sighting
from tests.contracts.backends import opened
from tests.test_account_multiplication import (
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
    via,
)
from tests.test_account_multiplication_fixes import paused

PROXY = "10.0.0.5"  # in server.trusted_proxies: it may name the device


@pytest.fixture
async def pd() -> AsyncIterator[PagerDutyFake]:
    async with PagerDutyFake(ROUTING_KEY) as fake:
        yield fake


async def test_one_ip_and_one_device_over_six_tenants_open_one_incident_one_page(
    tmp_path: Path, pd: PagerDutyFake
) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        made = await tenants(admin, 6)
        for _kid, key in made.values():
            assert (await chat(app, key, PROXY, **via(ATTACKER, "fp-1"))).status_code == 200
        watch = sightings_watch(app)
        clock.now += 60
        (incident,) = await watch.check()
        assert incident.detail["clients"] == sorted([ATTACKER, "device:fp-1"])
        assert incident.observed == 6
        assert sorted(incident.detail["paused_tenants"]) == sorted(made)
        clock.now += 60
        assert await watch.check() == []  # the next round: still the one incident
        listed = (await admin.get("/admin/v1/anomalies")).json()["data"]
        assert [i["id"] for i in listed] == [incident.id]
        await app.state.watch.pager.aclose(5.0)
    assert len(pd.triggers()) == 1
    assert pd.triggers()[0]["dedup_key"] == incident.dedup_key


async def test_a_device_linked_later_extends_the_ips_incident(
    tmp_path: Path, pd: PagerDutyFake
) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        first = await tenants(admin, 6)
        for _kid, key in first.values():  # the IP alone, no device named
            assert (await chat(app, key, PROXY, **via(ATTACKER))).status_code == 200
        watch = sightings_watch(app)
        (incident,) = await watch.check()
        assert incident.detail["clients"] == [ATTACKER]
        later = await tenants(admin, 6, prefix="n")
        keys = [key for _kid, key in later.values()]
        clock.now += 120
        # the device, first seen with the attacker's IP (the link)...
        assert (await chat(app, keys[0], PROXY, **via(ATTACKER, "fp-9"))).status_code == 200
        for i, key in enumerate(keys[1:]):  # ...then from five other IPs
            r = await chat(app, key, PROXY, **via(f"198.51.100.{i + 1}", "fp-9"))
            assert r.status_code == 200
        assert await watch.check() == []  # covered by the IP's incident: none opened
        for tid in later:
            is_paused, reason = await paused(admin, tid)
            assert is_paused and reason is not None and incident.id in reason
        r = await admin.post(f"/admin/v1/anomalies/{incident.id}/resolve")
        assert r.status_code == 200, r.text
        for tid in [*first, *later]:
            assert (await paused(admin, tid))[0] is False
        await app.state.watch.pager.aclose(5.0)
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]


async def test_devices_seen_without_the_ip_stay_their_own_clients(tmp_path: Path) -> None:
    """A service key's device is never linked to the SaaS server's IP (never a client): two
    devices over six tenants each are two clients, two incidents."""
    async with gateway(tmp_path, config(None), Clock()) as app, client(app) as admin:
        made = await tenants(admin, 6)
        watch = sightings_watch(app)
        for tid, (kid, _key) in made.items():
            for device in ("device:a", "device:b"):
                watch.seen_together([device], tid, kid, "free")
        opened_ = await watch.check()
        assert sorted(i.detail["clients"] for i in opened_) == [["device:a"], ["device:b"]]


# --- the store role ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
async def test_links_are_not_tenants_and_claims_are_all_or_nothing(
    backend: str, tmp_path: Path
) -> None:
    async with opened(backend, tmp_path) as store:
        s = store.multiplication
        rows = [Sighting("ip", f"t{i}", f"k{i}", T0 + i) for i in range(3)]
        rows += [Sighting("ip", LINK, "device:d", T0), Sighting("device:d", LINK, "ip", T0)]
        await s.add(rows)
        assert await s.crowded(T0 - 1, 2) == ["ip"]  # three tenants; the link is none
        assert await s.crowded(T0 - 1, 3) == []
        assert [r.tenant_id for r in await s.sightings("ip", T0 - 1)] == ["t0", "t1", "t2"]
        assert await s.sightings("device:d", T0 - 1) == []
        assert await s.linked("ip", T0 - 1) == ["device:d"]
        assert await s.linked("device:d", T0 - 1) == ["ip"]
        assert await s.linked("device:d", T0 + 1) == []  # older than asked
        assert await s.claim("b", T0, T0 - 60) is True
        assert await s.claim_all(["a", "b"], T0, T0 - 60) is False  # b is claimed...
        assert await s.claim_all(["a"], T0, T0 - 60) is True  # ...and a was not kept
        assert await s.claim_all(["c", "d", "c"], T0, T0 - 60) is True
        assert await s.claim("d", T0 + 1, T0 - 60) is False
        await s.prune(T0 + 1)
        assert await s.linked("ip", 0) == []


async def _race(stores: list[Any]) -> list[bool]:
    """Groups sharing client ``b`` (and ``c``), claimed at once from every store."""
    groups = [["a", "b"], ["b", "c"], ["c", "b"], ["b"]]
    return await asyncio.gather(*(s.multiplication.claim_all(g, T0, T0 - 60)
                                  for s in stores for g in groups))  # fmt: skip


async def test_postgres_one_group_claim_among_racers() -> None:
    from tests.contracts.backends import PG_DSN, drop_schema, require

    require("PostgreSQL store", ("PostgreSQL", 5432))
    from farebox.stores.postgres.store import PostgresStore

    schema = f"mult_{uuid.uuid4().hex[:8]}"
    stores = [PostgresStore(PG_DSN, schema=schema, pool_min=1, pool_max=8) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        wins = await _race(stores)
        assert sorted(wins) == [False] * 7 + [True]
    finally:
        for store in stores:
            await store.close()
        await drop_schema(schema)


async def test_sqlite_one_group_claim_among_racers(tmp_path: Path) -> None:
    stores = [await _open_sqlite(tmp_path) for _ in range(2)]  # two processes' worth
    try:
        wins = await _race(stores)
        assert sorted(wins) == [False] * 7 + [True]
    finally:
        for store in stores:
            await store.close()


async def _open_sqlite(tmp_path: Path) -> Any:
    from farebox.stores.sqlite.store import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    return store
