"""The dashboard's views in process: the tenants table pages, budget bars and top spenders
computed in integer money, and the chart series equal to the usage report."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from farebox.api.dashboard.data import budget_bar, top_spenders
from farebox.api.dashboard.sessions import COOKIE
from farebox.core.anomaly import Incident
from farebox.core.money import PICO_PER_USD, format_usd, parse_usd
from tests.conftest import ADMIN_KEY, Gateway

CONFIG: dict[str, Any] = {
    "providers": {"sim": {"kind": "mock", "seed": 7, "latency_ms": 0}},
    "plans": {"default": {"models": ["*"]}},
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PICO = st.integers(min_value=0, max_value=10**6 * PICO_PER_USD)


async def admin_page(gw: Gateway, path: str) -> httpx.Response:
    r = await gw.client.post("/dashboard/signin", data={"key": ADMIN_KEY}, headers=FORM)
    found = re.search(rf"{COOKIE}=([^;]+)", r.headers["set-cookie"])
    assert found
    gw.client.cookies.clear()
    return await gw.client.get(path, headers={"Cookie": f"{COOKIE}={found.group(1)}"})


async def chat(gw: Gateway, key: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    r = await gw.client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200, r.text


async def test_the_tenants_table_pages_biggest_spenders_first(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway(CONFIG) as gw:
        for i in range(53):
            await gw.tenant(f"t{i:02d}")
        await chat(gw, await gw.key("t40"))
        first = await admin_page(gw, "/dashboard")
        rows = re.findall(r'data-tenant-row="([^"]+)"', first.text)
        assert len(rows) == 50 and rows[0] == "t40" and rows[1:4] == ["t00", "t01", "t02"]
        assert "Page 1 of 2" in first.text
        tenant = await admin_page(gw, "/dashboard/tenants/t40")
        for page in (first, tenant):  # the charts' scripts (one macro for both pages)
            assert '<script src="/dashboard/static/uplot.iife.min.js">' in page.text
            assert '<script src="/dashboard/static/dashboard.js">' in page.text
        second = await admin_page(gw, "/dashboard?page=2")
        rest = re.findall(r'data-tenant-row="([^"]+)"', second.text)
        assert len(rest) == 3 and not set(rest) & set(rows)
        clamped = await admin_page(gw, "/dashboard?page=99")
        assert re.findall(r'data-tenant-row="([^"]+)"', clamped.text) == rest


async def test_the_chart_series_sums_to_the_usage_report(make_gateway: Callable[..., Any]) -> None:
    async with make_gateway(CONFIG) as gw:
        key = await gw.tenant_key("acme")
        for _ in range(3):
            await chat(gw, key)
        series = (await admin_page(gw, "/dashboard/data/series?hours=5&tenant=acme")).json()
        assert len(series["t"]) == 5 and all(
            b - a == 3600 for a, b in zip(series["t"], series["t"][1:])
        )
        usage = (await gw.client.get("/admin/v1/usage?tenant=acme", headers=gw.admin)).json()
        assert sum(series["requests"]) == usage["data"][0]["requests"] == 3
        revenue = parse_usd(usage["data"][0]["revenue_usd"])
        assert abs(sum(series["revenue"]) - revenue / PICO_PER_USD) < 1e-9


@given(PICO, PICO, PICO)
def test_budget_bars_never_pass_the_whole(limit: int, used: int, reserved: int) -> None:
    bar = budget_bar({"limit_usd": format_usd(limit), "used_usd": format_usd(used),
                      "reserved_usd": format_usd(reserved)})  # fmt: skip
    assert 0 <= bar["used_pct"] <= 100 and 0 <= bar["reserved_pct"] <= 100 - bar["used_pct"]
    if limit and used * 100 < limit * 100:
        assert bar["used_pct"] == used * 100 // limit


@given(st.lists(PICO, min_size=1, max_size=12))
def test_top_spenders_are_the_biggest_with_their_share(costs: list[int]) -> None:
    lines = [{"tenant": f"t{i}", "cost_usd": format_usd(c)} for i, c in enumerate(costs)]
    total = {"cost_usd": format_usd(sum(costs))}
    top = top_spenders(lines, total)
    assert [parse_usd(x["cost_usd"]) for x in top] == sorted((c for c in costs if c), reverse=True)[
        :5
    ]
    assert all(0 <= x["share_pct"] <= 100 for x in top)


async def test_resolving_an_incident_from_the_page(make_gateway: Callable[..., Any]) -> None:
    async with make_gateway(CONFIG) as gw:
        await gw.tenant("acme")
        now = time.time()
        incident = Incident("inc_1", "acme", "", "none", "", "requests", 500, 20, 100, now,
                            "farebox:acme:requests")  # fmt: skip
        assert await gw.store.traffic.open_incident(incident, now - 3600)
        page = await admin_page(gw, "/dashboard")
        assert 'data-incident="inc_1"' in page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        cookie = page.request.headers["cookie"]
        path = "/dashboard/anomalies/inc_1/resolve"
        headers = {**FORM, "Cookie": cookie}
        r = await gw.client.post(path, data={}, headers=headers)
        assert r.status_code == 403
        listed = await gw.client.get("/admin/v1/anomalies", headers=gw.admin)
        assert listed.json()["data"][0]["status"] == "open"
        r = await gw.client.post(path, data={"csrf_token": token.group(1)}, headers=headers)
        assert r.status_code == 303
        listed = await gw.client.get("/admin/v1/anomalies", headers=gw.admin)
        assert listed.json()["data"][0]["status"] == "resolved"
        r = await gw.client.post(
            "/dashboard/anomalies/inc_missing/resolve",
            data={"csrf_token": token.group(1)}, headers=headers,
        )  # fmt: skip
        assert r.status_code == 404
