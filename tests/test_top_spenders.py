"""Issue [13], revenue intelligence (top spenders of a month): ``GET /admin/v1/top-spenders?
month=`` ranks every tenant of the month by revenue (plan fee plus usage) and by cost, with
exact shares, the top N or the top P%; matched against a hand computation. The start/end form
(issue 11) keeps its answer; bad input is a 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from farebox.billing.top_spenders import how_many
from farebox.cli import main
from farebox.core.money import parse_usd
from tests.contracts.builders import entry

T0 = 1_793_577_600  # 2026-11-02T00:00:00Z
DEC = 1_796_083_200  # 2026-12-01T00:00:00Z
PLANS = {
    "free": {"models": ["*"]},
    "basic": {"models": ["*"], "pricing": {"monthly_fee_usd": "10"}},
    "pro": {"models": ["*"], "pricing": {"monthly_fee_usd": "49"}},
}
# tenant: (plan, usage revenue USD, cost USD); revenue = fee + usage
MONTH = {
    "f1": ("free", "5", "2"),  # revenue 5, cost 2
    "f2": ("free", "0", "0"),  # revenue 0, cost 0 (no traffic: still ranked)
    "b1": ("basic", "2", "8"),  # revenue 12, cost 8
    "b2": ("basic", "30", "20"),  # revenue 40, cost 20
    "p1": ("pro", "1", "50"),  # revenue 50, cost 50
}
# by hand: revenue total 107, cost total 80; shares rounded half-even to two places
BY_REVENUE = [("p1", "50.00", "46.73"), ("b2", "40.00", "37.38"), ("b1", "12.00", "11.21"),
              ("f1", "5.00", "4.67"), ("f2", "0.00", "0.00")]  # fmt: skip
BY_COST = [("p1", "50.00", "62.50"), ("b2", "20.00", "25.00"), ("b1", "8.00", "10.00"),
           ("f1", "2.00", "2.50"), ("f2", "0.00", "0.00")]  # fmt: skip


async def scripted(gw: Any, now: list[float]) -> None:
    now[0] = T0
    for tenant, (plan, usage, cost) in MONTH.items():
        await gw.tenant(tenant, plan=plan)
        if cost != "0":
            money = {"revenue": parse_usd(usage), "cost": parse_usd(cost)}
            await gw.store.append_ledger(
                [entry(f"r-{tenant}", tenant_id=tenant, started_at=T0 + 3600, **money)]
            )
    now[0] = DEC + 3600


def ranked(block: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(d["tenant"], d["amount_usd"], d["share_percent"]) for d in block["data"]]


@pytest.mark.parametrize(
    ("query", "size"), [("top=2", 2), ("percent=50", 3), ("percent=10", 1), ("", 5)]
)
async def test_the_month_ranked_by_revenue_and_by_cost(
    make_gateway: Any, query: str, size: int
) -> None:
    now = [0.0]
    async with make_gateway({"plans": PLANS}, clock=lambda: now[0]) as gw:
        await scripted(gw, now)
        r = await gw.client.get(f"/admin/v1/top-spenders?month=2026-11&{query}", headers=gw.admin)
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["top"] == size  # the top 50% of 5 is ceil(2.5) = 3; the top 10%, 1
    assert ranked(body["by_revenue"]) == BY_REVENUE[:size]
    assert ranked(body["by_cost"]) == BY_COST[:size]
    assert (body["by_revenue"]["total_usd"], body["by_cost"]["total_usd"]) == ("107.00", "80.00")
    assert body["by_revenue"]["tenants"] == 5
    first = body["by_revenue"]["data"][0]
    assert (first["plan"], first["plan_fee_usd"], first["usage_revenue_usd"]) == (
        "pro", "49.00", "1.00"
    )  # fmt: skip
    assert first["margin_usd"] == "0.00"
    assert body["data"] == body["by_cost"]["data"]  # ``by`` defaults to cost


async def test_the_start_end_form_keeps_its_answer(make_gateway: Any) -> None:
    """Issue 11's form ranks usage revenue over any range; ``top`` is another name of ``n``."""
    now = [0.0]
    async with make_gateway({"plans": PLANS}, clock=lambda: now[0]) as gw:
        await scripted(gw, now)
        span = f"start={T0}&end={DEC}&by=revenue"
        r = await gw.client.get(f"/admin/v1/top-spenders?{span}&top=2", headers=gw.admin)
        legacy = await gw.client.get(f"/admin/v1/top-spenders?{span}&n=2", headers=gw.admin)
    assert r.status_code == 200, r.text
    assert r.json() == legacy.json()
    assert [(d["tenant"], d["amount_usd"]) for d in r.json()["data"]] == [
        ("b2", "30.00"), ("f1", "5.00")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("month=2099-01", "month"),  # in the future
        ("month=2026-13", "month"),
        (f"month=2026-11&start={T0}", "month"),
        ("month=2026-11&top=2&n=3", "top"),
        ("month=2026-11&top=2&percent=10", "percent"),
        ("month=2026-11&percent=0", "percent"),
        ("month=2026-11&top=0", "top"),
    ],
)
async def test_bad_input_is_a_400(make_gateway: Any, query: str, param: str) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        r = await gw.client.get(f"/admin/v1/top-spenders?{query}", headers=gw.admin)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_how_many_rounds_a_percentage_up() -> None:
    assert [how_many(5, None, p) for p in (10, 20, 21, 100)] == [1, 1, 2, 5]
    assert (how_many(5, None, None), how_many(3, 10, None), how_many(0, 2, None)) == (5, 3, 0)


async def test_the_cli_prints_both_rankings(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    async with make_gateway({"plans": PLANS}, clock=lambda: now[0]) as gw:
        await scripted(gw, now)
        path = "/admin/v1/top-spenders?month=2026-11&top=2"
        api = (await gw.client.get(path, headers=gw.admin)).json()
    seen: list[str] = []

    def call_admin(config: Any, url: Any, method: str, p: str, body: Any = None) -> Any:
        seen.append(p)
        return api

    monkeypatch.setattr("farebox.cli.revenue.call_admin", call_admin)
    as_json = CliRunner().invoke(main, ["top-spenders", "--month", "2026-11", "--top", "2",
                                        "--json"])  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == api and seen == [path]
    table = CliRunner().invoke(main, ["top-spenders", "--month", "2026-11", "--top", "2"])
    assert table.exit_code == 0, table.output
    for tenant, amount, share in BY_REVENUE[:2] + BY_COST[:2]:
        assert tenant in table.output and amount in table.output and share in table.output
