"""The ``InboxStore`` contract (``Store.inbox``: the billing webhooks' marks of what was seen,
and grants parked for review) on every backend; plus races on marking and settling."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from farebox.core.inbound import InboundGrant, ParkedGrant
from tests.contracts.backends import EVERY

BACKENDS = EVERY
T0 = 1_796_083_200.5  # 2026-12-01T00:00:00.5Z


def parked(pid: str, event_id: str, at: float = T0, **grant: Any) -> ParkedGrant:
    values: dict[str, Any] = {
        "sink": "stripe", "event_id": event_id, "event_type": "billing.credit_grant.created",
        "action": "grant", "upstream_id": f"credgr_{event_id}", "customer": "cus_X",
        "amount": 10**30 + 7, "kind": "promo", "expires_at": T0 + 86_400.25,
        "note": "Spring promo", "problem": None,
    }  # fmt: skip
    values.update(grant)
    return ParkedGrant(pid, InboundGrant(**values), "no tenant has billing.x = 'cus_X'", at)


async def test_a_mark_is_new_once_per_sink_kind_and_ref(store: Any) -> None:
    inbox = store.inbox
    assert not await inbox.marked("stripe", "event", "evt_1")
    assert await inbox.mark("stripe", "event", "evt_1", T0) is True
    assert await inbox.mark("stripe", "event", "evt_1", T0 + 1) is False
    assert await inbox.marked("stripe", "event", "evt_1")
    assert await inbox.mark("stripe", "void", "evt_1", T0) is True  # another kind
    assert await inbox.mark("lago", "event", "evt_1", T0) is True  # another sink
    assert not await inbox.marked("metronome", "event", "evt_1")


async def test_concurrent_marks_make_exactly_one_first(store: Any) -> None:
    results = await asyncio.gather(
        *(store.inbox.mark("openmeter", "event", "race", T0 + i) for i in range(12))
    )
    assert sorted(results) == [False] * 11 + [True]


async def test_parked_grants_round_trip_exactly_and_park_once_per_event(store: Any) -> None:
    inbox = store.inbox
    first = parked("pk_1", "evt_1")
    assert await inbox.park(first) == first
    again = await inbox.park(parked("pk_other", "evt_1", at=T0 + 5, amount=1))
    assert again == first  # the same sink and event: the first one stands
    void = parked("pk_2", "evt_2", at=T0 - 10, action="void", amount=None, expires_at=None,
                  note=None, problem="currency 'eur' is not the configured 'usd'")  # fmt: skip
    await inbox.park(void)
    lago = dataclasses.replace(parked("pk_3", "evt_1", at=T0 + 1))
    lago = dataclasses.replace(lago, grant=dataclasses.replace(lago.grant, sink="lago"))
    await inbox.park(lago)
    assert await inbox.parked() == [void, first, lago]  # oldest first
    assert await inbox.get_parked("pk_2") == void
    assert await inbox.get_parked("pk_other") is None


async def test_settling_a_parked_grant_happens_once(store: Any) -> None:
    inbox = store.inbox
    await inbox.park(parked("pk_1", "evt_1"))
    await inbox.park(parked("pk_2", "evt_2", at=T0 + 1))
    wins = await asyncio.gather(*(inbox.settle_parked("pk_1", f"t{i}", T0 + 9) for i in range(6)))
    assert sorted(wins) == [False] * 5 + [True]
    done = await inbox.get_parked("pk_1")
    assert done.status == "applied" and done.applied_at == T0 + 9
    assert done.tenant_id in {f"t{i}" for i in range(6)}
    assert await inbox.settle_parked("pk_1", "acme", T0 + 10) is False
    assert await inbox.settle_parked("pk_missing", "acme", T0) is False
    assert [p.id for p in await inbox.parked("parked")] == ["pk_2"]
    assert [p.id for p in await inbox.parked("applied")] == ["pk_1"]
