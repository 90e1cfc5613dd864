"""The ``UpsellStore`` contract (``Store.upsell``: upsell moments, one per tenant, kind, budget
and hour; plan changes; credit top-ups read from the grants) on every backend that keeps it."""

from __future__ import annotations

import asyncio
from typing import Any

from farebox.core.credits import CreditGrant
from farebox.core.upsell import Moment, PlanChange, TopUp

BACKENDS = ("memory", "sqlite", "postgres", "postgres+redis")
T0 = 1_793_577_600  # 2026-11-02T00:00:00Z
HOUR = 3_600


def moment(tenant: str, hour: int = T0, kind: str = "budget_exceeded", budget: str = "tenant/month",
           plan: str = "free") -> Moment:  # fmt: skip
    return Moment(tenant, kind, budget, hour, plan)


async def test_a_moment_is_kept_once_per_tenant_kind_budget_and_hour(store: Any) -> None:
    u = store.upsell
    first = moment("acme")
    await u.add_moments([first, moment("acme", plan="pro")])  # same key: the first is kept
    await u.add_moments([first])
    others = [moment("acme", T0 + HOUR), moment("acme", kind="insufficient_credits", budget=""),
              moment("acme", budget="user/day"), moment("beta")]  # fmt: skip
    await asyncio.gather(*(u.add_moments([m, first]) for m in others))
    found = await u.moments(T0, T0 + 2 * HOUR)
    assert found == sorted([first, *others], key=lambda m: (m.hour, m.tenant_id, m.kind,
                                                            m.budget))  # fmt: skip
    assert await u.moments(T0 + 1, T0 + HOUR + 1) == [moment("acme", T0 + HOUR)]
    assert await u.moments(T0 - HOUR, T0) == []
    await u.add_moments([])


async def test_plan_changes_in_a_range_oldest_first(store: Any) -> None:
    u = store.upsell
    later = PlanChange("acme", "basic", "pro", T0 + 50.5)
    earlier = PlanChange("beta", "free", "basic", T0 + 10.25)
    await u.add_plan_change(later)
    await u.add_plan_change(earlier)
    assert await u.plan_changes(T0, T0 + 100) == [earlier, later]
    assert await u.plan_changes(T0 + 11, T0 + 50.5) == []


async def test_top_ups_are_the_grants_of_kind_top_up(store: Any) -> None:
    big = 10**30  # money is exact whatever its size
    grants = [CreditGrant("g1", "acme", "k1", "top_up", big, T0 + 5),
              CreditGrant("g2", "acme", "k2", "promo", 7, T0 + 6),
              CreditGrant("g3", "beta", "k1", "top_up", 9, T0 + 1)]  # fmt: skip
    for grant in grants:
        await store.credits.grant_credits(grant)
    assert await store.upsell.top_ups(T0, T0 + 10) == [
        TopUp("beta", 9, T0 + 1), TopUp("acme", big, T0 + 5)
    ]  # fmt: skip
    assert await store.upsell.top_ups(T0 + 2, T0 + 5) == []
