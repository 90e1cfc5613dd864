"""Account multiplication behind a shared IP (review finding 5): links de-duplicate the
incident and its page, but never widen its pause. What an incident pauses comes from the
clients that crossed the limit on their own (``detail.crossed``), so a device passing once
through an office NAT IP does not pause the legitimate tenants working behind it; a linked
client that later crosses on its own has its own tenants paused under the same incident.

In process with an injected clock; rounds are run by calling the watch's ``check``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakes.paging import PagerDutyFake
from tests.test_account_multiplication import (
    ROUTING_KEY,
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
OFFICE = "192.0.2.10"  # IP1: an office NAT, three legitimate tenants behind it
HOME = "198.51.100.20"  # IP2: where device D signs up its free tenants
DEVICE = "fp-d"


@pytest.fixture
async def pd() -> AsyncIterator[PagerDutyFake]:
    async with PagerDutyFake(ROUTING_KEY) as fake:
        yield fake


async def test_a_device_passing_through_an_office_ip_does_not_pause_the_office(
    tmp_path: Path, pd: PagerDutyFake
) -> None:
    clock = Clock()
    async with gateway(tmp_path, config(pd), clock) as app, client(app) as admin:
        office = await tenants(admin, 3, prefix="o")
        own = await tenants(admin, 6, prefix="d")
        for _kid, key in office.values():  # the office at work: IP1 stays under the limit
            assert (await chat(app, key, PROXY, **via(OFFICE))).status_code == 200
        for _kid, key in own.values():  # device D, six free tenants, from IP2
            assert (await chat(app, key, PROXY, **via(HOME, DEVICE))).status_code == 200
        first_key = next(iter(own.values()))[1]  # then one request from the office NAT
        assert (await chat(app, first_key, PROXY, **via(OFFICE, DEVICE))).status_code == 200
        watch = sightings_watch(app)
        clock.now += 60
        (incident,) = await watch.check()  # D and IP2 both crossed: one incident
        # its group: D and the IPs linked to it (which IP comes first is the store's order)
        assert {HOME, f"device:{DEVICE}"} <= set(incident.detail["clients"])
        assert incident.detail["crossed"] == sorted([HOME, f"device:{DEVICE}"])
        assert sorted(incident.detail["paused_tenants"]) == sorted(own)
        assert sorted(incident.detail["tenants"]) == sorted(own)
        assert incident.observed == 6
        for tid, (_kid, key) in office.items():
            assert (await paused(admin, tid)) == (False, None)
            assert (await chat(app, key, PROXY, **via(OFFICE))).status_code == 200
        for tid in own:
            is_paused, reason = await paused(admin, tid)
            assert is_paused and reason is not None and incident.id in reason

        # D goes on with a new tenant from the office: the incident pauses it, not the office
        (new_tid, (_kid, new_key)), *_ = (await tenants(admin, 1, prefix="n")).items()
        clock.now += 120
        assert (await chat(app, new_key, PROXY, **via(OFFICE, DEVICE))).status_code == 200
        for _kid, key in office.values():
            assert (await chat(app, key, PROXY, **via(OFFICE))).status_code == 200
        assert await watch.check() == []  # no second incident
        is_paused, reason = await paused(admin, new_tid)
        assert is_paused and reason is not None and incident.id in reason
        for tid in office:
            assert (await paused(admin, tid)) == (False, None)

        r = await admin.post(f"/admin/v1/anomalies/{incident.id}/resolve")
        assert r.status_code == 200, r.text
        for tid in [*own, new_tid]:
            assert (await paused(admin, tid))[0] is False
        await app.state.watch.pager.aclose(5.0)
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]


async def test_a_linked_client_crossing_later_on_its_own_joins_the_incidents_pause(
    tmp_path: Path,
) -> None:
    """The office IP, linked to the device's incident, crosses the limit itself a round
    later: its own tenants are paused under that incident (no second one); before that, none
    of them was."""
    clock = Clock()
    async with gateway(tmp_path, config(None), clock) as app, client(app) as admin:
        office = await tenants(admin, 6, prefix="o")
        own = await tenants(admin, 6, prefix="d")
        watch = sightings_watch(app)
        device = f"device:{DEVICE}"
        for tid, (kid, _key) in own.items():
            watch.seen_together([HOME, device], tid, kid, "free")
        tid0, (kid0, _key) = next(iter(own.items()))
        watch.seen_together([OFFICE, device], tid0, kid0, "free")
        for tid, (kid, _key) in list(office.items())[:4]:  # IP1: five tenants, not over
            watch.seen_together([OFFICE], tid, kid, "free")
        (incident,) = await watch.check()
        assert OFFICE not in incident.detail["crossed"]
        for tid in office:
            assert (await paused(admin, tid)) == (False, None)
        clock.now += 120
        for tid, (kid, _key) in list(office.items())[4:]:  # IP1 now over on its own
            watch.seen_together([OFFICE], tid, kid, "free")
        assert await watch.check() == []
        for tid in office:
            is_paused, reason = await paused(admin, tid)
            assert is_paused and reason is not None and incident.id in reason


async def test_a_device_over_the_limit_alone_pauses_its_own_tenants_not_its_ips(
    tmp_path: Path,
) -> None:
    """Device D spreads six tenants over three home IPs (two each, none over) and passes once
    through the office: the group is D and all four IPs, only D crossed, and only D's six
    tenants are paused (the office's three are not)."""
    async with gateway(tmp_path, config(None), Clock()) as app, client(app) as admin:
        office = await tenants(admin, 3, prefix="o")
        own = await tenants(admin, 6, prefix="d")
        watch = sightings_watch(app)
        device = f"device:{DEVICE}"
        homes = [f"198.51.100.{i}" for i in (1, 2, 3)]
        for i, (tid, (kid, _key)) in enumerate(own.items()):
            watch.seen_together([homes[i // 2], device], tid, kid, "free")
        for tid, (kid, _key) in office.items():
            watch.seen_together([OFFICE], tid, kid, "free")
        tid0, (kid0, _key) = next(iter(own.items()))
        watch.seen_together([OFFICE, device], tid0, kid0, "free")
        (incident,) = await watch.check()
        assert incident.detail["clients"] == sorted([*homes, OFFICE, device])
        assert incident.detail["crossed"] == [device]
        assert sorted(incident.detail["paused_tenants"]) == sorted(own)
        for tid in office:
            assert (await paused(admin, tid)) == (False, None)
