"""Issue [13], revenue intelligence (plan profitability): for a scripted month, each plan's
margin percentiles (nearest rank), its share of profitable tenants and whether its
90th-percentile-usage tenant is profitable match a hand computation; bad months are a 400."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from farebox.app import create_app
from farebox.billing.profitability import rank, share
from farebox.cli import main
from farebox.config.settings import parse_settings
from farebox.core.money import parse_usd
from tests.contracts.builders import entry

PLANS = {
    "basic": {"models": ["*"], "pricing": {"monthly_fee_usd": "10"}},
    "pro": {"models": ["*"], "pricing": {"monthly_fee_usd": "49"}},
}
# tenant: (plan, usage revenue USD, provider cost USD); margins by hand below
MONTH = {
    "b1": ("basic", "0", "0"),  # 10 + 0 - 0 = 10
    "b2": ("basic", "2", "5"),  # 10 + 2 - 5 = 7
    "b3": ("basic", "1", "15"),  # 10 + 1 - 15 = -4
    "b4": ("basic", "3", "20"),  # 10 + 3 - 20 = -7
    "b5": ("basic", "0", "1"),  # 10 + 0 - 1 = 9
    "p1": ("pro", "1", "10"),  # 49 + 1 - 10 = 40
    "p2": ("pro", "0", "60"),  # 49 + 0 - 60 = -11
}


async def test_a_scripted_month_matches_the_hand_computation(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        now = time.time()
        for tenant, (plan, usage, cost) in MONTH.items():
            await gw.tenant(tenant, plan=plan)
            money = {"revenue": parse_usd(usage), "cost": parse_usd(cost)}
            await gw.store.append_ledger(
                [entry(f"r-{tenant}", tenant_id=tenant, started_at=now, **money)]
            )
        month = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
        r = await gw.client.get(f"/admin/v1/plan-profitability?month={month}", headers=gw.admin)
        assert r.status_code == 200, r.text
        basic, pro = r.json()["data"]
    # basic: margins sorted -7, -4, 7, 9, 10 (N=5): p10 rank 1, p50 rank 3, p90 rank 5;
    # by cost b1 0, b5 1, b2 5, b3 15, b4 20: the 90th percentile (rank 5) is b4, margin -7
    assert (basic["plan"], basic["tenants"]) == ("basic", 5)
    assert (basic["margin_p10_usd"], basic["margin_p50_usd"], basic["margin_p90_usd"]) == (
        "-7.00", "7.00", "10.00"
    )  # fmt: skip
    assert basic["profitable_share"] == "0.6000"
    heavy = basic["p90_usage_tenant"]
    assert (heavy["tenant"], heavy["margin_usd"], heavy["profitable"]) == ("b4", "-7.00", False)
    assert (basic["revenue_usd"], basic["cost_usd"], basic["margin_usd"]) == (
        "56.00", "41.00", "15.00"
    )  # fmt: skip
    # pro: margins -11, 40 (N=2): p10 rank 1, p50 rank 1, p90 rank 2; by cost p1 10, p2 60
    assert (pro["margin_p10_usd"], pro["margin_p50_usd"], pro["margin_p90_usd"]) == (
        "-11.00", "-11.00", "40.00"
    )  # fmt: skip
    assert pro["profitable_share"] == "0.5000"
    assert (pro["p90_usage_tenant"]["tenant"], pro["p90_usage_tenant"]["profitable"]) == (
        "p2", False
    )  # fmt: skip


async def test_a_bad_month_is_a_400_naming_it(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        for month in ("2026-13", "nope", ""):
            r = await gw.client.get(f"/admin/v1/plan-profitability?month={month}", headers=gw.admin)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "month"
        empty = await gw.client.get("/admin/v1/plan-profitability?month=2020-01", headers=gw.admin)
        assert empty.status_code == 200 and empty.json()["data"] == []


@given(st.integers(1, 100), st.integers(1, 500))
def test_nearest_rank_is_the_smallest_rank_covering_p_percent(p: int, n: int) -> None:
    r = rank(p, n) + 1  # 1-based
    assert 1 <= r <= n and r * 100 >= p * n and (r == 1 or (r - 1) * 100 < p * n)


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_share_rounds_half_up_to_four_places(part: int, whole: int) -> None:
    got = share(part, whole)
    assert got is not None
    units = int(got.replace(".", ""))
    assert abs(units * whole - part * 10_000) * 2 <= whole


def test_the_cli_prints_what_the_api_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``farebox profitability --month``: the admin API's numbers, as a table or as JSON."""
    admin = {"Authorization": "Bearer fba_profit_cli_admin_key_0123456789abcd"}
    data = {"database": f"sqlite:///{tmp_path / 'f.db'}", "plans": PLANS}
    env = {"FAREBOX_ADMIN_KEY": admin["Authorization"][7:]}
    settings = parse_settings(data, source="t.yaml", env=env, base_dir=tmp_path)
    month = datetime.now(UTC).strftime("%Y-%m")
    with TestClient(create_app(settings, announce=lambda _m: None)) as client:
        for tenant, plan in (("b1", "basic"), ("p1", "pro")):
            assert client.post("/admin/v1/tenants", json={"id": tenant, "plan": plan},
                               headers=admin).status_code == 201  # fmt: skip
            made = client.post(f"/admin/v1/tenants/{tenant}/keys", json={}, headers=admin)
            key = made.json()["key"]
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            r = client.post("/v1/chat/completions", json=body,
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 200, r.text

        def call_admin(config: Any, url: Any, method: str, path: str, body: Any = None) -> Any:
            return client.request(method, path, headers=admin).json()

        monkeypatch.setattr("farebox.cli.billing.call_admin", call_admin)
        api = call_admin(None, None, "GET", f"/admin/v1/plan-profitability?month={month}")
        as_json = CliRunner().invoke(main, ["profitability", "--month", month, "--json"])
        assert as_json.exit_code == 0, as_json.output
        assert json.loads(as_json.output) == api
        table = CliRunner().invoke(main, ["profitability", "--month", month])
        assert table.exit_code == 0, table.output
        for line in api["data"]:
            assert line["plan"] in table.output and line["margin_p50_usd"] in table.output
            verdict = "profitable" if line["p90_usage_tenant"]["profitable"] else "loses money"
            assert verdict in table.output
