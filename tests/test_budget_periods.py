"""Acceptance: budget periods follow the configured time zone, through the HTTP API.

An in-process gateway with an injected clock (``budgets.timezone: America/New_York``).
Every request costs exactly USD 0.10: the model ``unit`` is priced at USD 0.01 per output
token and nothing for input, and the mock always answers with 10 tokens.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from farebox.core.money import parse_usd

NY = ZoneInfo("America/New_York")
COST = parse_usd("0.10")
CHAT = {"model": "unit", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    """The gateway's clock: unix seconds, set by the test."""

    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
    micro: int = 0,
) -> datetime:  # fmt: skip
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=NY)


def config(*budgets: dict[str, Any]) -> dict[str, Any]:
    mock = {"kind": "mock", "seed": 3, "output_tokens": {"distribution": "fixed", "mean": 10}}
    unit = {"provider": "sim", "model": "unit", "price": {"input": "0", "output": "10000"}}
    return {
        "providers": {"sim": mock},
        "models": {"unit": [unit]},
        "plans": {"p": {"models": ["*"], "budgets": list(budgets)}},
        "budgets": {"timezone": "America/New_York"},
    }


class Tenant:
    def __init__(self, gw: Any, key: str) -> None:
        self.gw = gw
        self.auth = {"Authorization": f"Bearer {key}"}

    async def chat(self) -> Any:
        return await self.gw.client.post("/v1/chat/completions", json=CHAT, headers=self.auth)

    async def spend(self, requests: int) -> None:
        for _ in range(requests):
            r = await self.chat()
            assert r.status_code == 200, r.text
            assert parse_usd(r.headers["x-farebox-cost-usd"]) == COST

    async def refused(self) -> dict[str, Any]:
        r = await self.chat()
        assert r.status_code == 429, r.text
        error = r.json()["error"]
        assert error["code"] == "budget_exceeded"
        error["retry_after"] = int(r.headers["retry-after"])
        return dict(error)

    async def budget(self) -> dict[str, Any]:
        r = await self.gw.client.get("/v1/me", headers=self.auth)
        assert r.status_code == 200, r.text
        [only] = r.json()["budgets"]
        return dict(only)


async def new_tenant(gw: Any, tenant_id: str = "t") -> Tenant:
    return Tenant(gw, await gw.tenant_key(tenant_id, "p"))


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("day", "midnight_utc"),
    [
        ((2025, 1, 15), "2025-01-16T05:00:00Z"),  # EST, UTC-5
        ((2025, 7, 15), "2025-07-16T04:00:00Z"),  # EDT, UTC-4
        ((2025, 3, 9), "2025-03-10T04:00:00Z"),  # spring forward: a 23-hour day
        ((2025, 11, 2), "2025-11-03T05:00:00Z"),  # fall back: a 25-hour day
    ],
)
async def test_daily_budget_resets_at_local_midnight(
    make_gateway: Any, day: tuple[int, int, int], midnight_utc: str
) -> None:
    clock = Clock(local(*day, 23, 59, 30))
    async with make_gateway(config({"period": "day", "limit_usd": "0.30"}), clock=clock) as gw:
        t = await new_tenant(gw)
        await t.spend(3)
        error = await t.refused()
        assert error["budget"] == {"scope": "tenant", "period": "day", "name": None}
        assert error["used_usd"] == "0.30" and error["limit_usd"] == "0.30"
        assert error["resets_at"] == midnight_utc
        assert error["retry_after"] == 31  # 30 s to midnight, rounded up past it
        me = await t.budget()
        assert me["resets_at"] == midnight_utc and me["used_usd"] == "0.30"
        assert me["remaining_usd"] == "0.00" and me["reserved_usd"] == "0.00"

        clock.set(local(*day, 23, 59, 59))
        assert (await t.refused())["retry_after"] == 2
        clock.set(local(*day, 23, 59, 59, micro=999_000))
        await t.refused()

        clock.set(local(*day, 23, 59, 59) + timedelta(seconds=1))  # exactly midnight
        await t.spend(1)
        clock.set(local(*day, 23, 59, 59) + timedelta(seconds=2))  # 00:00:01
        await t.spend(1)
        me = await t.budget()
        assert me["used_usd"] == "0.20" and me["limit_usd"] == "0.30"
        tomorrow = datetime.fromtimestamp(clock.now, NY).date()
        next_midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=NY)
        assert me["resets_at"] == utc_iso(next_midnight + timedelta(days=1))


async def test_monthly_budget_resets_on_the_first(make_gateway: Any) -> None:
    clock = Clock(local(2025, 1, 1, 0, 0, 0))
    async with make_gateway(config({"period": "month", "limit_usd": "0.30"}), clock=clock) as gw:
        t = await new_tenant(gw)
        await t.spend(1)  # on Jan 1st
        clock.set(local(2025, 1, 31, 23, 59, 50))
        assert (await t.budget())["used_usd"] == "0.10"  # the whole of January counts
        await t.spend(2)
        error = await t.refused()
        assert error["budget"]["period"] == "month"
        assert error["resets_at"] == "2025-02-01T05:00:00Z"
        assert error["retry_after"] == 11

        clock.set(local(2025, 2, 1, 0, 0, 1))
        await t.spend(3)
        me = await t.budget()
        assert me["used_usd"] == "0.30" and me["resets_at"] == "2025-03-01T05:00:00Z"
        await t.refused()

        clock.set(local(2025, 12, 31, 23, 0, 0))  # December: into the new year
        await t.spend(1)
        assert (await t.budget())["resets_at"] == "2026-01-01T05:00:00Z"


async def test_weekly_budget_resets_on_monday(make_gateway: Any) -> None:
    clock = Clock(local(2025, 1, 13, 0, 0, 0))  # a Monday
    async with make_gateway(config({"period": "week", "limit_usd": "0.20"}), clock=clock) as gw:
        t = await new_tenant(gw)
        await t.spend(1)
        clock.set(local(2025, 1, 19, 23, 59, 0))  # Sunday, the same week
        assert (await t.budget())["used_usd"] == "0.10"
        await t.spend(1)
        error = await t.refused()
        assert error["budget"]["period"] == "week"
        assert error["resets_at"] == "2025-01-20T05:00:00Z"  # Monday midnight in New York
        clock.set(local(2025, 1, 19, 23, 59, 59))
        await t.refused()

        clock.set(local(2025, 1, 20, 0, 0, 1))  # Monday
        await t.spend(2)
        me = await t.budget()
        assert me["used_usd"] == "0.20" and me["resets_at"] == "2025-01-27T05:00:00Z"


async def test_rolling_hour_frees_spend_an_hour_later(make_gateway: Any) -> None:
    start = local(2025, 1, 15, 12, 0, 0)
    clock = Clock(start)
    budget = {"period": "rolling:1h", "limit_usd": "0.30"}
    async with make_gateway(config(budget), clock=clock) as gw:
        t = await new_tenant(gw)
        await t.spend(2)  # at 12:00:00
        clock.set(start + timedelta(minutes=30))
        await t.spend(1)  # at 12:30:00
        error = await t.refused()
        assert error["budget"]["period"] == "rolling:1h"
        assert error["used_usd"] == "0.30"

        clock.set(start + timedelta(minutes=59, seconds=59))
        await t.refused()
        assert (await t.budget())["used_usd"] == "0.30"

        clock.set(start + timedelta(hours=1))  # the 12:00 spend has left the window
        assert (await t.budget())["used_usd"] == "0.10"
        await t.spend(2)
        await t.refused()

        clock.set(start + timedelta(hours=1, minutes=30))  # ...and now the 12:30 spend
        assert (await t.budget())["used_usd"] == "0.20"
        await t.spend(1)
        await t.refused()


async def test_rolling_hour_refusal_says_when_spend_frees(make_gateway: Any) -> None:
    """A rolling window's 429 points at the moment a retry can succeed, not sooner."""
    start = local(2025, 1, 15, 12, 0, 0)
    clock = Clock(start)
    budget = {"period": "rolling:1h", "limit_usd": "0.20"}
    async with make_gateway(config(budget), clock=clock) as gw:
        t = await new_tenant(gw)
        await t.spend(2)  # at 12:00:00, frees at 13:00:00
        clock.set(start + timedelta(minutes=10))
        error = await t.refused()
        assert error["resets_at"] == utc_iso(start + timedelta(hours=1))
        assert error["retry_after"] >= 50 * 60


async def test_rollover_adds_unused_budget_up_to_the_cap(make_gateway: Any) -> None:
    day1 = local(2025, 1, 15, 10, 0, 0)
    clock = Clock(day1)
    budget = {"period": "day", "limit_usd": "1.00", "rollover_cap_usd": "0.50"}
    async with make_gateway(config(budget), clock=clock) as gw:
        light, heavy = await new_tenant(gw, "light"), await new_tenant(gw, "heavy")
        await light.spend(2)  # 0.20 used: 0.80 unused, capped at 0.50
        await heavy.spend(9)  # 0.90 used: 0.10 unused

        clock.set(day1 + timedelta(days=1))
        me = await light.budget()
        assert me["limit_usd"] == "1.50" and me["used_usd"] == "0.00"
        assert (await heavy.budget())["limit_usd"] == "1.10"
        # the carried-over amount is spendable, and not a cent more
        await heavy.spend(11)
        error = await heavy.refused()
        assert error["limit_usd"] == "1.10" and error["used_usd"] == "1.10"

        clock.set(day1 + timedelta(days=2))  # only the day just before carries over
        assert (await heavy.budget())["limit_usd"] == "1.00"  # day 2 overspent the base
        assert (await light.budget())["limit_usd"] == "1.50"  # day 2 unused: capped again


async def test_a_new_tenant_has_nothing_to_roll_over_on_its_first_day(make_gateway: Any) -> None:
    """Rollover carries budget a tenant left unused; the day before it existed left none."""
    clock = Clock(local(2025, 1, 15, 10, 0, 0))
    budget = {"period": "day", "limit_usd": "1.00", "rollover_cap_usd": "0.50"}
    async with make_gateway(config(budget), clock=clock) as gw:
        t = await new_tenant(gw)
        assert (await t.budget())["limit_usd"] == "1.00"
