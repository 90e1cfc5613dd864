"""Issue [13], revenue intelligence (what-if repricing): ``POST /admin/v1/reprice`` and
``farebox reprice`` replay a month of one plan's tenants at a proposed markup, resale price or
per-request price, from the rollups, and answer revenue and margin before and after, matching
a hand computation; nothing changes. Bad input (an unknown plan, a month in the future, no
price or two) is a 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from farebox.billing.reprice import Proposal, proposal
from farebox.cli import main
from farebox.core.money import mul_ratio, parse_usd
from farebox.core.records import SeriesPoint
from tests.contracts.builders import entry

T0 = 1_793_577_600  # 2026-11-02T00:00:00Z
DEC = 1_796_083_200  # 2026-12-01T00:00:00Z
PLANS = {
    "basic": {"models": ["*"], "pricing": {"monthly_fee_usd": "10"}},
    "pro": {"models": ["*"], "pricing": {"markup": "2", "monthly_fee_usd": "49"}},
}
USD = 10**12


async def scripted(gw: Any, now: list[float]) -> None:
    """p1 (pro): $10 of cost earning $20, two 3-pico requests earning 6 pico each, one failed
    request; p2 (pro): $4 earning $8, 1,000 input tokens (200 cached) and 500 output; b1
    (basic): $1 earning $5, not repriced."""
    now[0] = T0
    for tenant, plan in (("p1", "pro"), ("p2", "pro"), ("b1", "basic")):
        await gw.tenant(tenant, plan=plan)
    at = {"started_at": T0 + 7200}
    await gw.store.append_ledger([
        entry("a1", tenant_id="p1", cost=10 * USD, revenue=20 * USD, **at),
        entry("a2", tenant_id="p1", cost=3, revenue=6, **at),
        entry("a3", tenant_id="p1", cost=3, revenue=6, **at),
        entry("a4", tenant_id="p1", status="error", http_status=502, **at),
        entry("b", tenant_id="p2", cost=4 * USD, revenue=8 * USD, input_tokens=1000,
              cached_input_tokens=200, output_tokens=500, **at),
        entry("c", tenant_id="b1", cost=USD, revenue=5 * USD, **at),
    ])  # fmt: skip
    now[0] = DEC + 3600


async def what_if(gw: Any, **body: Any) -> Any:
    return await gw.client.post(
        "/admin/v1/reprice", json={"month": "2026-11", "plan": "pro", **body}, headers=gw.admin
    )


def lines(report: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    keys = ("revenue_before_usd", "revenue_after_usd", "margin_before_usd", "margin_after_usd")
    return {d["tenant"]: tuple(d[k] for k in keys) for d in report["data"]}


async def test_a_markup_what_if_matches_the_hand_computation(make_gateway: Any) -> None:
    now = [0.0]
    async with make_gateway({"plans": PLANS}, clock=lambda: now[0]) as gw:
        await scripted(gw, now)
        margins = await gw.client.get("/admin/v1/margins?month=2026-11", headers=gw.admin)
        r = await what_if(gw, markup="3.5")
        assert r.status_code == 200, r.text
        after = await gw.client.get("/admin/v1/margins?month=2026-11", headers=gw.admin)
        assert after.json() == margins.json()  # a what-if changes nothing
    report = r.json()
    # p1 before: 49 + 20 + 12 pico = 69.000000000012; cost 10.000000000006.
    # after: the month's cost times 3.5, rounded once (the documented rule): 35.000000000021
    # (per entry it would be 35 + 11 + 11 pico); plus the fee: 84.000000000021.
    # p2 before: 49 + 8 = 57, cost 4; after: 49 + 14 = 63.
    assert lines(report) == {
        "p1": ("69.000000000012", "84.000000000021", "59.000000000006", "74.000000000015"),
        "p2": ("57.00", "63.00", "53.00", "59.00"),
    }
    total = report["total"]
    assert (total["tenants"], total["revenue_before_usd"], total["revenue_after_usd"]) == (
        2, "126.000000000012", "147.000000000021"
    )  # fmt: skip
    assert (total["revenue_change_usd"], total["cost_usd"]) == (
        "21.000000000009", "14.000000000006"
    )  # fmt: skip
    assert report["applied"] is False and report["proposed"] == {"markup": "3.5"}
    p2 = next(d for d in report["data"] if d["tenant"] == "p2")
    assert (p2["margin_before_percent"], p2["margin_after_percent"]) == ("92.98", "93.65")


async def test_resale_and_per_request_what_ifs(make_gateway: Any) -> None:
    now = [0.0]
    async with make_gateway({"plans": PLANS}, clock=lambda: now[0]) as gw:
        await scripted(gw, now)
        resale = await what_if(gw, resale={"input": "2", "output": "8"})
        cached = await what_if(gw, resale={"input": "2", "output": "8", "cached_input": "1"})
        per_request = await what_if(gw, per_request="0.02", monthly_fee_usd="0")
    for r in (resale, cached, per_request):
        assert r.status_code == 200, r.text
    # p2 at $2/$8 per 1M: 1,000 input x 2e6 pico + 500 output x 8e6 pico = 0.006; p1 has no
    # tokens: only its fee. With cached input at $1: 800 x 2e6 + 200 x 1e6 + 4e9 = 0.0058.
    assert lines(resale.json())["p2"][1] == "49.006"
    assert lines(resale.json())["p1"][1] == "49.00"
    assert lines(cached.json())["p2"][1] == "49.0058"
    # per request, no fee: p1 served 3 (the failed one is not charged), p2 served 1
    assert {t: v[1] for t, v in lines(per_request.json()).items()} == {"p1": "0.06", "p2": "0.02"}
    assert lines(per_request.json())["p1"][3] == "-9.940000000006"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"plan": "enterprise", "markup": "3"}, "plan", "enterprise"),
        ({"month": "2099-01", "markup": "3"}, "month", "future"),
        ({"month": "2026-13", "markup": "3"}, "month", "2026-13"),
        ({}, "markup", "exactly one"),
        ({"markup": "3", "per_request": "0.01"}, "markup", "exactly one"),
        ({"markup": "-1"}, "markup", "negative"),
        ({"markup": "lots"}, "markup", "lots"),
        ({"resale": {"input": "0.0000001"}}, "resale.input", "decimal"),
        ({"per_request": "-0.01"}, "per_request", "negative"),
    ],
)
async def test_bad_input_is_a_400(
    make_gateway: Any, body: dict[str, Any], param: str, words: str
) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        r = await gw.client.post("/admin/v1/reprice", headers=gw.admin,
                                 json={"month": "2026-11", "plan": "pro", **body})  # fmt: skip
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


@given(st.lists(st.integers(0, 10**15), min_size=1, max_size=30),
       st.integers(1, 10**6), st.integers(1, 10**6))  # fmt: skip
def test_the_markup_on_the_sum_is_within_a_pico_per_entry(
    costs: list[int], num: int, den: int
) -> None:
    """The documented rule (rounded once on the month's sum) differs from rounding each entry
    by at most half a pico-USD per entry, plus the sum's own half."""
    point = SeriesPoint(0.0, "t", requests=len(costs), cost=sum(costs))
    on_sum = Proposal(markup=(num, den)).usage(point, len(costs))
    per_entry = sum(mul_ratio(c, num, den) for c in costs)
    assert on_sum == mul_ratio(sum(costs), num, den)
    assert abs(on_sum - per_entry) * 2 <= len(costs) + 1


def test_a_proposal_is_exact() -> None:
    assert proposal({"markup": "3.5"}).markup == (7, 2)
    assert proposal({"per_request": "0.02"}).per_request == parse_usd("0.02")
    resale = proposal({"resale": {"input": "2", "output": "8"}}).resale
    assert resale == (2_000_000, 8_000_000, None)


async def test_the_cli_sends_the_what_if(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    async with make_gateway({"plans": PLANS}, clock=lambda: now[0]) as gw:
        await scripted(gw, now)
        api = (await what_if(gw, markup="3.5")).json()
    sent: list[Any] = []

    def call_admin(config: Any, url: Any, method: str, path: str, body: Any = None) -> Any:
        sent.append((method, path, body))
        return api

    monkeypatch.setattr("farebox.cli.revenue.call_admin", call_admin)
    args = ["reprice", "--month", "2026-11", "--plan", "pro", "--markup", "3.5"]
    as_json = CliRunner().invoke(main, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == api
    assert sent[0] == ("POST", "/admin/v1/reprice",
                       {"month": "2026-11", "plan": "pro", "markup": "3.5"})  # fmt: skip
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0, table.output
    assert "84.000000000021" in table.output and "TOTAL" in table.output
    resale = CliRunner().invoke(main, ["reprice", "--month", "2026-11", "--plan", "pro",
                                       "--resale-input", "2", "--resale-output", "8"])  # fmt: skip
    assert resale.exit_code == 0, resale.output
    assert sent[-1][2]["resale"] == {"input": "2", "output": "8"}
