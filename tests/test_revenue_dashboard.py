"""Issue [13], "Seen" (dashboard), in process: the admin's revenue page shows plan
profitability (p10/p50/p90, the profitable share, the p90-usage tenant), the top spenders by
revenue and by cost, and each prepaid tenant's credits, each number equal to the admin API's
answer for the same data; a tenant's page shows its own balance, burn and invoice preview, and
never the revenue page; bad months are a 400 page; the burn is exact arithmetic."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from farebox.api.dashboard import revenue
from farebox.api.dashboard.pages import environment
from farebox.api.dashboard.revenue import DAY, RevenueData, burn, shift
from farebox.api.dashboard.sessions import COOKIE
from farebox.billing.margins import month_window
from tests.conftest import ADMIN_KEY, Gateway
from tests.html_cells import Page
from tests.revenue_seed import CONFIG, PREPAID, TENANTS, rest, seed, this_month

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def page_as(gw: Gateway, key: str, path: str) -> httpx.Response:
    """``path`` signed in with ``key`` (the admin's or a tenant's), not following redirects."""
    r = await gw.client.post("/dashboard/signin", data={"key": key}, headers=FORM)
    found = re.search(rf"{COOKIE}=([^;]+)", r.headers["set-cookie"])
    assert found, r.text
    gw.client.cookies.clear()
    return await gw.client.get(path, headers={"Cookie": f"{COOKIE}={found.group(1)}"})


async def test_the_revenue_page_shows_the_admin_apis_numbers(make_gateway: Any) -> None:
    month = this_month()
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        r = await page_as(gw, ADMIN_KEY, "/dashboard/revenue")
        assert r.status_code == 200, r.text
        page = Page(r.text)
        panels = [e.attrs["data-panel"] for e in page.having("data-panel")]
        assert panels == [name for name, _ in RevenueData.PANELS]
        profit = await rest(gw, "/admin/v1/plan-profitability", month=month)
        assert [p["plan"] for p in profit["data"]] == ["basic", "prepaid", "pro", "promo"]
        assert not profit["data"][3]["p90_usage_tenant"]["profitable"]  # both states shown
        for line in profit["data"]:
            row = page.one(data_plan=line["plan"])
            for name in ("tenants", "margin_p10_usd", "margin_p50_usd", "margin_p90_usd",
                         "revenue_usd", "cost_usd", "margin_usd"):  # fmt: skip
                assert page.cell(row, name) == str(line[name]), (line["plan"], name)
            share = page.one(row, data_field="profitable_share").attrs["data-share"]
            assert share == (line["profitable_share"] or "")
            heavy = line["p90_usage_tenant"]
            cell = page.one(row, data_field="p90_usage_tenant")
            assert cell.attrs["data-tenant"] == heavy["tenant"]
            assert page.cell(row, "p90_margin_usd") == heavy["margin_usd"]
            shown = cell.text
            assert ("loses money" not in shown) == heavy["profitable"]
        start, end = (str(int(x)) for x in month_window(month))
        for by in ("revenue", "cost"):
            top = await rest(gw, "/admin/v1/top-spenders", start=start, end=end, by=by, n=10)
            ranking = page.one(data_ranking=by)
            rows = page.having("data-spender", ranking)
            assert [e.attrs["data-spender"] for e in rows] == [s["tenant"] for s in top["data"]]
            assert len(rows) == 5  # pro2 sent nothing
            for row, s in zip(rows, top["data"], strict=True):
                assert page.cell(row, "amount_usd") == s["amount_usd"]
                assert page.cell(row, "share_percent") == f"{s['share_percent']}%"
                assert page.cell(row, "requests") == str(s["requests"])
            assert page.one(ranking, data_total=by).text == f"${top['total_usd']}"
        listed = [e.attrs["data-credits"] for e in page.having("data-credits")]
        assert listed == sorted(PREPAID)  # by tenant id
        for tenant in PREPAID:
            view = await rest(gw, f"/admin/v1/tenants/{tenant}/credits")
            row = page.one(data_credits=tenant)
            for name in ("balance", "reserved", "burned", "granted", "expired"):
                assert page.cell(row, name) == view[name], (tenant, name)


async def test_a_tenant_sees_its_own_balance_burn_and_invoice(make_gateway: Any) -> None:
    month = this_month()
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        for tenant, key in keys.items():
            r = await page_as(gw, key, "/dashboard")
            assert r.status_code == 200, r.text
            page = Page(r.text)
            invoice = await rest(gw, f"/admin/v1/tenants/{tenant}/invoice", month=month)
            assert page.one(data_invoice="total").text == f"${invoice['total_usd']}"
            lines = page.having("data-line")
            assert [e.attrs["data-line"] for e in lines] == [x["kind"] for x in invoice["lines"]]
            for row, line in zip(lines, invoice["lines"], strict=True):
                assert page.cell(row, "amount_usd") == line["amount_usd"]
            if tenant not in PREPAID:
                assert not page.all(id="credits"), tenant
                continue
            credits = await rest(gw, f"/admin/v1/tenants/{tenant}/credits")
            for name in ("balance", "reserved", "burned", "granted", "expired"):
                assert page.one(data_credits=name).text == credits[name], (tenant, name)
            assert page.one(data_credits="month_burn").text == invoice["credits_burned"]
            assert credits["burned"] == invoice["credits_burned"] != "0.00"  # all this month
            for other in TENANTS:
                if other != tenant:
                    assert other not in r.text, (tenant, other)
            kept = await page_as(gw, key, "/dashboard/revenue")
            assert kept.status_code == 303 and kept.headers["location"] == "/dashboard"
            assert "/dashboard/revenue" not in r.text  # no link to it either


async def test_the_admin_opens_a_tenants_page_with_its_credits(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        r = await page_as(gw, ADMIN_KEY, "/dashboard/tenants/pp1")
        page = Page(r.text)
        credits = await rest(gw, "/admin/v1/tenants/pp1/credits")
        assert page.one(data_credits="balance").text == credits["balance"]
        assert 'href="/dashboard/revenue"' in r.text  # the admin's navigation


async def test_months_other_than_this_one_and_bad_months(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        before = shift(this_month(), -1)
        r = await page_as(gw, ADMIN_KEY, f"/dashboard/revenue?month={before}")
        assert r.status_code == 200
        page = Page(r.text)
        assert "No tenants this month." in page.one(data_panel="profitability").text
        assert f"?month={this_month()}" in r.text  # a link forward to this month
        for bad, words in (("2999-01", "future"), ("2026-13", "2026-11"), ("nov", "2026-11")):
            r = await page_as(gw, ADMIN_KEY, f"/dashboard/revenue?month={bad}")
            assert r.status_code == 400, bad
            assert words in Page(r.text).one(role="alert").text, bad
        r = await page_as(gw, ADMIN_KEY, "/dashboard/revenue")
        assert 'rel="next"' not in r.text  # no month after this one


async def test_the_credit_balances_page_through_the_prepaid_tenants(
    make_gateway: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(revenue, "BALANCES_PER_PAGE", 1)
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        seen = []
        for number in (1, 2, 3):  # 3: past the end, the last page
            r = await page_as(gw, ADMIN_KEY, f"/dashboard/revenue?credits_page={number}")
            page = Page(r.text)
            rows = page.having("data-credits")
            assert len(rows) == 1
            seen.append(rows[0].attrs["data-credits"])
            assert f"Page {min(number, 2)} of 2" in page.one(id="credits").text
        assert seen == [*sorted(PREPAID), sorted(PREPAID)[-1]]
        r = await page_as(gw, ADMIN_KEY, "/dashboard/revenue?credits_page=x")
        assert Page(r.text).having("data-credits")[0].attrs["data-credits"] == sorted(PREPAID)[0]


def test_every_panel_has_its_template() -> None:
    env = environment()
    for name, _title in RevenueData.PANELS:
        assert env.get_template(f"panel_{name}.html") is not None


def test_months_shift_across_years() -> None:
    assert shift("2026-01", -1) == "2025-12"
    assert shift("2026-12", 1) == "2027-01"
    assert shift("2026-05", 0) == "2026-05"


@given(
    st.integers(min_value=0, max_value=10**9),  # burned this month, in hundredths
    st.integers(min_value=0, max_value=10**9),  # balance, in hundredths
    st.integers(min_value=0, max_value=30 * DAY),  # seconds into the month
)
def test_the_burn_rate_and_runway_are_exact_floors(spent: int, left: int, into: int) -> None:
    start, _ = month_window("2026-11")
    month_burn = f"{spent // 100}.{spent % 100:02d}"
    got = burn({"balance": f"{left // 100}.{left % 100:02d}"},
               {"month": "2026-11", "credits_burned": month_burn}, start + into)  # fmt: skip
    days = got["days"]
    assert days == max(1, -(-into // DAY))
    per_day = Fraction(got["per_day"])
    assert per_day * days <= Fraction(spent, 100) < (per_day + Fraction(1, 100)) * days
    if spent == 0:
        assert got["runway_days"] is None
    else:
        runway = got["runway_days"]
        rate = Fraction(spent, 100 * days)
        assert runway * rate <= Fraction(left, 100) < (runway + 1) * rate


UPSELL_FIELDS = ("moments", "tenants_refused", "tenants_converted", "converted_revenue_usd")
REPRICE_FIELDS = ("revenue_before_usd", "revenue_after_usd", "revenue_change_usd",
                  "margin_before_usd", "margin_after_usd")  # fmt: skip


def same_upsell_line(page: Page, row: Any, line: dict[str, Any]) -> None:
    for name in UPSELL_FIELDS:
        assert page.cell(row, name) == str(line[name]), name
    rate = page.one(row, data_field="conversion_rate_percent").attrs["data-rate"]
    assert rate == (line["conversion_rate_percent"] or "")
    converted = [e.attrs["data-converted"] for e in page.having("data-converted", row)]
    assert converted == line["converted_tenants"]


async def test_the_upsell_panel_shows_the_admin_apis_numbers(make_gateway: Any) -> None:
    from tests import test_upsell

    now = [0.0]
    async with make_gateway({"plans": test_upsell.PLANS}, clock=lambda: now[0]) as gw:
        await test_upsell.scripted(gw, now)
        for window in ("", "20"):
            query = f"&window_days={window}" if window else ""
            r = await page_as(gw, ADMIN_KEY, f"/dashboard/revenue?month=2026-11{query}")
            assert r.status_code == 200, r.text
            page = Page(r.text)
            report = await rest(gw, "/admin/v1/upsell", month="2026-11",
                                window_days=window or "14")  # fmt: skip
            panel = page.one(data_panel="upsell")
            plans = page.having("data-upsell-plan", panel)
            assert [e.attrs["data-upsell-plan"] for e in plans] == [
                g["plan"] for g in report["by_plan"]
            ]
            for row, line in zip(plans, report["by_plan"], strict=True):
                same_upsell_line(page, row, line)
            budgets = page.having("data-upsell-budget", panel)
            assert [e.attrs["data-upsell-budget"] for e in budgets] == [
                f"{g['kind']}:{g['budget'] or ''}" for g in report["by_budget"]
            ]
            for row, line in zip(budgets, report["by_budget"], strict=True):
                same_upsell_line(page, row, line)
            same_upsell_line(page, page.one(panel, data_upsell_total=window or "14"),
                             report["total"])  # fmt: skip
            whatif = page.one(data_form="reprice")  # carries the window along, hidden
            kept = {e.attrs["name"]: e.attrs["value"] for e in page.all(whatif, type="hidden")}
            assert kept == {"month": "2026-11", **({"window_days": window} if window else {})}
        # the scripted month: 2 of 5 refused tenants convert in 14 days, 3 in 20
        assert report["total"]["conversion_rate_percent"] == "60.00"
        for bad in ("0", "400", "two"):
            r = await page_as(gw, ADMIN_KEY, f"/dashboard/revenue?month=2026-11&window_days={bad}")
            api = await gw.client.get(f"/admin/v1/upsell?month=2026-11&window_days={bad}",
                                      headers=gw.admin)  # fmt: skip
            assert r.status_code == api.status_code == 400, bad
            page = Page(r.text)
            assert page.one(data_error="upsell").text == api.json()["error"]["message"], bad
            assert page.one(data_panel="profitability")  # the rest of the page is still there


async def test_the_what_if_form_shows_the_admin_apis_before_and_after(make_gateway: Any) -> None:
    from tests import test_reprice

    now = [0.0]
    async with make_gateway({"plans": test_reprice.PLANS}, clock=lambda: now[0]) as gw:
        await test_reprice.scripted(gw, now)
        margins = await rest(gw, "/admin/v1/margins", month="2026-11")
        r = await page_as(gw, ADMIN_KEY, "/dashboard/revenue?month=2026-11")
        form = Page(r.text).one(data_form="reprice")
        assert r.status_code == 200 and form.attrs["method"] == "get"
        assert not Page(r.text).having("data-repriced")  # no plan asked: the form alone
        for query, body in (
            ("markup=3.5", {"markup": "3.5"}),
            ("resale_input=2&resale_output=8&resale_cached_input=1",
             {"resale": {"input": "2", "output": "8", "cached_input": "1"}}),
            ("per_request=0.02&monthly_fee_usd=0&markup=",
             {"per_request": "0.02", "monthly_fee_usd": "0"}),
        ):  # fmt: skip
            r = await page_as(gw, ADMIN_KEY, f"/dashboard/revenue?month=2026-11&plan=pro&{query}")
            assert r.status_code == 200, r.text
            api = await test_reprice.what_if(gw, **body)
            report = api.json()
            page = Page(r.text)
            rows = page.having("data-repriced")
            assert [e.attrs["data-repriced"] for e in rows] == [d["tenant"] for d in report["data"]]
            assert len(rows) == 2  # p1 and p2; b1 is on basic
            for row, line in zip(rows, report["data"], strict=True):
                for name in (*REPRICE_FIELDS, "cost_usd", "requests"):
                    assert page.cell(row, name) == str(line[name]), (query, name)
                for name in ("margin_before_percent", "margin_after_percent"):
                    assert page.cell(row, name) == f"{line[name]}%", (query, name)
            total = page.one(data_repriced_total="2")
            for name in (*REPRICE_FIELDS, "cost_usd"):
                assert page.cell(total, name) == report["total"][name], (query, name)
        assert lines_after(report) == {"p1": "0.06", "p2": "0.02"}  # the API's own answer
        upsell_form = page.one(data_form="upsell")  # carries the what-if along, hidden
        kept = {e.attrs["name"]: e.attrs["value"] for e in page.all(upsell_form, type="hidden")}
        assert kept == {"month": "2026-11", "plan": "pro", "per_request": "0.02",
                        "monthly_fee_usd": "0"}  # fmt: skip
        assert await rest(gw, "/admin/v1/margins", month="2026-11") == margins  # unchanged


def lines_after(report: dict[str, Any]) -> dict[str, str]:
    return {d["tenant"]: d["revenue_after_usd"] for d in report["data"]}


async def test_a_bad_what_if_shows_the_apis_400_message(make_gateway: Any) -> None:
    from tests import test_reprice

    cases = [
        ("plan=enterprise&markup=3", {"plan": "enterprise", "markup": "3"}),
        ("plan=pro", {}),
        ("plan=pro&markup=3&per_request=0.01", {"markup": "3", "per_request": "0.01"}),
        ("plan=pro&markup=-1", {"markup": "-1"}),
        ("plan=pro&markup=lots", {"markup": "lots"}),
        ("plan=pro&markup=" + "9" * 41, {"markup": "9" * 41}),
        ("plan=pro&resale_input=0.0000001", {"resale": {"input": "0.0000001"}}),
        ("plan=pro&markup=2&monthly_fee_usd=-5", {"markup": "2", "monthly_fee_usd": "-5"}),
    ]
    now = [0.0]
    async with make_gateway({"plans": test_reprice.PLANS}, clock=lambda: now[0]) as gw:
        await test_reprice.scripted(gw, now)
        for query, body in cases:
            r = await page_as(gw, ADMIN_KEY, f"/dashboard/revenue?month=2026-11&{query}")
            api = await test_reprice.what_if(gw, **body)
            assert r.status_code == api.status_code == 400, (query, api.text)
            page = Page(r.text)
            assert page.one(data_error="reprice").text == api.json()["error"]["message"], query
            assert not page.having("data-repriced")
            assert page.one(data_panel="profitability")  # the rest of the page is still there
