"""Account multiplication: a shared client claimed by another incident never hides a new
attacker (review 2, finding 2).

Device E crosses the limit and passes once through the office NAT IP, so E's incident lists
(and claims) the office IP. Device D then signs up six free tenants over three IPs (two each,
so no IP crosses) and passes once through the office. D crossed on its own, and no open
incident covers D itself (it is not one of incident 1's clients, nor linked to E), so D
opens its own incident, is paged and its six tenants are paused: whether incident 1 was
resolved meanwhile (before the fix: nothing for the rest of the window) or is still open
(before the fix: D's tenants were paused under E's incident and nobody was paged).

The store role: ``claim_all`` claims the crossing clients all or nothing, the linked ones
only when free; of racing groups that share a client, crossing or linked, exactly one wins.

In process with an injected clock; rounds are run by calling the watch's ``check``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.paging import PagerDutyFake
from tests.contracts.backends import opened
from tests.test_account_multiplication import (
    ROUTING_KEY,
    T0,
    Clock,
    client,
    config,
    gateway,
    sightings_watch,
    tenants,
)
from tests.test_account_multiplication_fixes import paused

OFFICE = "192.0.2.10"
E, D = "device:fp-e", "device:fp-d"


@pytest.fixture
async def pd() -> AsyncIterator[PagerDutyFake]:
    async with PagerDutyFake(ROUTING_KEY) as fake:
        yield fake


async def _e_via_the_office(app: Any, admin: httpx.AsyncClient, clock: Clock) -> Any:
    """Incident 1: device E over six tenants, once through the office (its clients)."""
    first = await tenants(admin, 6, prefix="e")
    watch = sightings_watch(app)
    for tid, (kid, _k) in first.items():
        watch.seen_together([E], tid, kid, "free")
    tid0, (kid0, _k) = next(iter(first.items()))
    watch.seen_together([OFFICE, E], tid0, kid0, "free")
    (incident,) = await watch.check()
    assert incident.detail["clients"] == sorted([OFFICE, E])
    assert incident.detail["crossed"] == [E]
    clock.now += 120
    return incident


async def _d_via_the_office(app: Any, admin: httpx.AsyncClient) -> dict[str, Any]:
    """Device D: six tenants over three IPs (none crosses), once through the office."""
    later = await tenants(admin, 6, prefix="d")
    watch = sightings_watch(app)
    for i, (tid, (kid, _k)) in enumerate(later.items()):
        watch.seen_together([f"203.0.113.{i // 2}", D], tid, kid, "free")
    tid0, (kid0, _k) = next(iter(later.items()))
    watch.seen_together([OFFICE, D], tid0, kid0, "free")
    return later


@pytest.mark.parametrize("resolved", [True, False], ids=["resolved", "open"])
async def test_a_new_attacker_through_a_claimed_office_ip_opens_its_own_incident(
    tmp_path: Path, pd: PagerDutyFake, resolved: bool
) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        first = await _e_via_the_office(app, admin, clock)
        if resolved:  # say, as a false positive
            r = await admin.post(f"/admin/v1/anomalies/{first.id}/resolve")
            assert r.status_code == 200, r.text
        later = await _d_via_the_office(app, admin)
        watch = sightings_watch(app)
        (incident,) = await watch.check()
        assert incident.id != first.id
        assert incident.detail["client"] == D
        assert incident.detail["crossed"] == [D]
        assert sorted(incident.detail["paused_tenants"]) == sorted(later)
        assert incident.dedup_key == f"farebox/account_multiplication/{D}"
        for tid in later:
            is_paused, reason = await paused(admin, tid)
            assert is_paused and reason is not None and incident.id in reason
        clock.now += 120
        assert await watch.check() == []  # D is now covered by its own incident
        await app.state.watch.pager.aclose(5.0)
    triggers = [e["dedup_key"] for e in pd.events if e["event_action"] == "trigger"]
    assert triggers == [first.dedup_key, incident.dedup_key]


async def test_the_office_crossing_later_still_joins_the_open_incident_that_lists_it(
    tmp_path: Path,
) -> None:
    """The office IP is one of incident 1's clients: crossing on its own later, it is covered
    by it (its tenants paused under it), no second incident."""
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        first = await _e_via_the_office(app, admin, clock)
        office = await tenants(admin, 6, prefix="o")
        watch = sightings_watch(app)
        for tid, (kid, _k) in office.items():
            watch.seen_together([OFFICE], tid, kid, "free")
        assert await watch.check() == []
        for tid in office:
            is_paused, reason = await paused(admin, tid)
            assert is_paused and reason is not None and first.id in reason


async def test_a_crossing_office_whose_own_incident_was_resolved_hides_no_attacker(
    tmp_path: Path, pd: PagerDutyFake
) -> None:
    """A coworking NAT IP over the limit on its own: its incident is resolved as a false
    positive, and it goes on crossing every round. Device D crossing through it in the same
    round still opens its own incident; the office's tenants stay unpaused."""
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        office = await tenants(admin, 6, prefix="o")
        watch = sightings_watch(app)
        for tid, (kid, _k) in office.items():
            watch.seen_together([OFFICE], tid, kid, "free")
        (first,) = await watch.check()
        r = await admin.post(f"/admin/v1/anomalies/{first.id}/resolve")
        assert r.status_code == 200, r.text
        clock.now += 120
        for tid, (kid, _k) in office.items():  # the office at work again
            watch.seen_together([OFFICE], tid, kid, "free")
        later = await _d_via_the_office(app, admin)
        (incident,) = await watch.check()
        assert incident.detail["crossed"] == [D]
        assert sorted(incident.detail["paused_tenants"]) == sorted(later)
        for tid in office:
            assert (await paused(admin, tid)) == (False, None)
        await app.state.watch.pager.aclose(5.0)
    triggers = [e["dedup_key"] for e in pd.events if e["event_action"] == "trigger"]
    assert triggers == [first.dedup_key, incident.dedup_key]


# --- the store role ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
async def test_linked_clients_are_claimed_only_when_free(backend: str, tmp_path: Path) -> None:
    async with opened(backend, tmp_path) as store:
        s = store.multiplication
        since = T0 - 60
        assert await s.claim_all(["e"], T0, since, linked=["office"]) is True
        # a linked one claimed already fails nothing, and a free one is claimed
        assert await s.claim_all(["d"], T0, since, linked=["office", "ip1"]) is True
        assert await s.claim("ip1", T0, since) is False
        assert await s.claim("office", T0, since) is False
        # a crossing one claimed already fails the group, and its free linked ones stay free
        assert await s.claim_all(["d", "x"], T0, since, linked=["y"]) is False
        assert await s.claim_all(["x"], T0, since) is True
        assert await s.claim_all(["y"], T0, since) is True
        # the window has passed: claimed again
        assert await s.claim_all(["office"], T0 + 100, T0 + 1) is True


async def _race(stores: list[Any]) -> list[bool]:
    """One process saw the device cross, another the IP: each links the other."""
    calls = [(["d"], ["ip"]), (["ip"], ["d"]), (["d", "ip"], []), (["ip"], ["d", "o"])]
    return await asyncio.gather(*(s.multiplication.claim_all(c, T0, T0 - 60, linked=ln)
                                  for s in stores for c, ln in calls))  # fmt: skip


async def test_postgres_one_claim_among_racers_linked_either_way() -> None:
    from tests.contracts.backends import PG_DSN, drop_schema, require

    require("PostgreSQL store", ("PostgreSQL", 5432))
    from farebox.stores.postgres.store import PostgresStore

    schema = f"mult_{uuid.uuid4().hex[:8]}"
    stores = [PostgresStore(PG_DSN, schema=schema, pool_min=1, pool_max=8) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        assert sorted(await _race(stores)) == [False] * 7 + [True]
    finally:
        for store in stores:
            await store.close()
        await drop_schema(schema)


async def test_sqlite_one_claim_among_racers_linked_either_way(tmp_path: Path) -> None:
    from farebox.stores.sqlite.store import SQLiteStore

    stores = [SQLiteStore(tmp_path / "s.db") for _ in range(2)]  # two processes' worth
    for store in stores:
        await store.open()
    try:
        assert sorted(await _race(stores)) == [False] * 7 + [True]
    finally:
        for store in stores:
            await store.close()
