"""Issue [13], revenue intelligence (upsell conversion), acceptance 3 (second half): refusals
for want of money are upsell moments (one per tenant, kind, budget and hour, however many
requests were refused); a move to a plan with a higher fee, or a credit top-up, within the
window converts. A scripted month where two of five refused tenants convert reports 40%."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from farebox.billing.upsell import UpsellRecorder
from farebox.cli import main
from farebox.core.credits import CreditGrant
from farebox.core.upsell import Moment
from farebox.errors import BudgetExceeded, InsufficientCredits, RateLimited
from farebox.stores.memory.store import MemoryStore

T0 = 1_793_404_800  # 2026-11-01T00:00:00Z
DAY, HOUR = 86_400, 3_600
WALL = [{"period": "month", "limit_usd": "0.0000001"}]  # refuses every request
PLANS = {
    "free": {"models": ["*"], "budgets": WALL},
    "basic": {"models": ["*"], "budgets": WALL, "pricing": {"monthly_fee_usd": "10"}},
    "pro": {"models": ["*"], "pricing": {"monthly_fee_usd": "49"}},
}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


async def ask(gw: Any, key: str) -> int:
    r = await gw.client.post("/v1/chat/completions", json=CHAT,
                             headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    return r.status_code


async def scripted(gw: Any, now: list[float]) -> dict[str, str]:
    """November 2026, window 14 days:
    t1 (free) refused day 3, moves to pro day 5: converted;
    t2 (free) refused day 3, moves to basic day 20 (17 days on): not converted;
    t3 (basic) refused day 10, moves down to free day 11: not converted (a lower fee);
    t4 (basic) out of credits day 10, tops up day 12: converted;
    t5 (free) refused three times in one hour on day 28 and once two hours later: two
    moments, never converts; t6 (free) upgrades without ever being refused: not counted."""
    now[0] = T0
    keys = {}
    for tenant, plan in (("t1", "free"), ("t2", "free"), ("t3", "basic"), ("t4", "basic"),
                         ("t5", "free"), ("t6", "free")):  # fmt: skip
        await gw.tenant(tenant, plan=plan)
        keys[tenant] = await gw.key(tenant)
    upsell = gw.app.state.upsell

    async def at(day: float, *refused: str) -> None:
        now[0] = T0 + day * DAY
        for tenant in refused:
            assert await ask(gw, keys[tenant]) == 429
        await upsell.drain()

    async def move(tenant: str, plan: str) -> None:
        r = await gw.client.patch(f"/admin/v1/tenants/{tenant}", json={"plan": plan},
                                  headers=gw.admin)  # fmt: skip
        assert r.status_code == 200, r.text

    await at(3, "t1", "t2")
    await at(5)
    await move("t1", "pro")
    await at(10, "t3")
    # credits are the lead's admission: the hook is told as admission would tell it
    upsell.refused("t4", "basic", InsufficientCredits("no credits left"))
    await at(11)
    await move("t3", "free")
    await at(12)
    grant = CreditGrant("g1", "t4", "k1", "top_up", 10**13, created_at=now[0])
    await gw.store.credits.grant_credits(grant)
    await at(20)
    await move("t2", "basic")
    await move("t6", "pro")
    await at(28, "t5", "t5", "t5")
    await at(28 + 2 / 24, "t5")
    now[0] = T0 + 45 * DAY
    return keys


async def test_two_of_five_refused_tenants_convert_40_percent(make_gateway: Any) -> None:
    now = [0.0]
    async with make_gateway({"plans": PLANS}, clock=lambda: now[0]) as gw:
        await scripted(gw, now)
        r = await gw.client.get("/admin/v1/upsell?month=2026-11", headers=gw.admin)
        assert r.status_code == 200, r.text
        report = r.json()
        margins = (await gw.client.get("/admin/v1/margins?month=2026-11", headers=gw.admin)).json()
        wide = await gw.client.get(
            "/admin/v1/upsell?month=2026-11&window_days=20", headers=gw.admin
        )
        december = await gw.client.get("/admin/v1/upsell?month=2026-12", headers=gw.admin)
    revenue = {line["tenant"]: line["revenue_usd"] for line in margins["data"]}
    assert (revenue["t1"], revenue["t4"]) == ("49.00", "10.00")  # plan fees: refused, no usage
    total = report["total"]
    assert (total["moments"], total["tenants_refused"], total["tenants_converted"]) == (6, 5, 2)
    assert total["conversion_rate_percent"] == "40.00"
    assert total["converted_tenants"] == ["t1", "t4"]
    assert total["converted_revenue_usd"] == "59.00"
    by_plan = {g["plan"]: g for g in report["by_plan"]}
    # free: t1, t2, t5 (4 moments), t1 converted; basic: t3, t4 (2 moments), t4 converted
    assert {p: (g["moments"], g["tenants_refused"], g["tenants_converted"],
                g["conversion_rate_percent"], g["converted_revenue_usd"])
            for p, g in by_plan.items()} == {
        "free": (4, 3, 1, "33.33", "49.00"), "basic": (2, 2, 1, "50.00", "10.00"),
    }  # fmt: skip
    by_budget = {(g["kind"], g["budget"]): g for g in report["by_budget"]}
    assert {k: (g["tenants_refused"], g["tenants_converted"], g["conversion_rate_percent"])
            for k, g in by_budget.items()} == {
        ("budget_exceeded", "tenant/month"): (4, 1, "25.00"),
        ("insufficient_credits", None): (1, 1, "100.00"),
    }  # fmt: skip
    # a 20-day window also counts t2's upgrade (17 days on): 3 of 5
    assert wide.json()["total"]["conversion_rate_percent"] == "60.00"
    assert december.json()["total"]["tenants_refused"] == 0
    assert december.json()["total"]["conversion_rate_percent"] is None


@pytest.mark.parametrize(
    ("query", "param"),
    [("month=2099-01", "month"), ("month=2026-11&window_days=0", "window_days"),
     ("month=2026-11&window_days=400", "window_days"), ("month=11-2026", "month")],
)  # fmt: skip
async def test_bad_input_is_a_400(make_gateway: Any, query: str, param: str) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        r = await gw.client.get(f"/admin/v1/upsell?{query}", headers=gw.admin)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_a_refusal_storm_writes_one_moment_per_hour() -> None:
    store = MemoryStore()
    now = [T0 + 30.0]
    recorder = UpsellRecorder(store.upsell, lambda: now[0])
    wall = BudgetExceeded("no", extra={"budget": {"scope": "user", "period": "day", "name": "x"}})
    for _ in range(1000):
        recorder.refused("acme", "free", wall)
        recorder.refused("acme", "free", RateLimited("not an upsell moment"))
    assert len(recorder._pending) == 1  # one queued, 999 dropped in memory
    now[0] += HOUR
    recorder.refused("acme", "free", wall)
    await recorder.drain()
    assert await store.upsell.moments(T0, T0 + DAY) == [
        Moment("acme", "budget_exceeded", "user/day/x", T0, "free"),
        Moment("acme", "budget_exceeded", "user/day/x", T0 + HOUR, "free"),
    ]


async def test_the_cli_prints_the_report(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    async with make_gateway({"plans": PLANS}, clock=lambda: now[0]) as gw:
        await scripted(gw, now)
        api = (await gw.client.get("/admin/v1/upsell?month=2026-11&window_days=14",
                                   headers=gw.admin)).json()  # fmt: skip

    def call_admin(config: Any, url: Any, method: str, path: str, body: Any = None) -> Any:
        assert path == "/admin/v1/upsell?month=2026-11&window_days=14"
        return api

    monkeypatch.setattr("farebox.cli.revenue.call_admin", call_admin)
    as_json = CliRunner().invoke(main, ["upsell", "--month", "2026-11", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == api
    table = CliRunner().invoke(main, ["upsell", "--month", "2026-11"])
    assert table.exit_code == 0, table.output
    for text in ("free", "basic", "33.33", "50.00", "40.00", "insufficient_credits"):
        assert text in table.output
