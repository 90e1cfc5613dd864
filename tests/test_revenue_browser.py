"""Issue [13], "Seen" in a real browser: the admin's revenue page and a prepaid tenant's
credits and invoice preview, in headless Chromium (Debian's ``chromium`` through Playwright's
``executable_path``, as ``test_dashboard_browser``) against a real ``farebox serve`` with the
mock provider and seeded traffic. Each page's numbers equal the admin API's; no console
error, failed request or response of 400 and above; the screenshots
``docs/dashboard-revenue.png`` (with a refused tenant that converts in the upsell panel),
``docs/dashboard-reprice.png`` (a what-if asked through the page's form) and
``docs/dashboard-tenant-credits.png`` are made here.

Without ``/usr/bin/chromium`` the browser tests skip (they fail under
``FAREBOX_REQUIRE_SERVICES=1``); the served pages are still checked over HTTP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from farebox.api.dashboard import signin_link
from farebox.billing.margins import month_window
from tests import browser as harness
from tests.browser import DOCS, Watched
from tests.e2e import ADMIN_KEY, admin_headers, serve, write_config
from tests.html_cells import Page
from tests.test_dashboard_browser import Site, _traffic, chart_drawn, sign_in_as_admin

browser, tab = harness.browser, harness.tab  # the harness fixtures: Chromium, a watched tab

PLANS: dict[str, Any] = {
    "pro": {"models": ["*"], "pricing": {"markup": "1.3", "monthly_fee_usd": "49"}},
    "starter": {"models": ["*"], "pricing": {"markup": "0.8"}},  # sold below cost
    "prepaid": {"models": ["*"], "pricing": {"markup": "2", "credits": {"per_usd": 1000}}},
    # a budget wall: every request is refused, an upsell moment
    "free": {"models": ["*"], "budgets": [{"period": "month", "limit_usd": "0.0000001"}]},
}
# id: (name, plan, requests sent, credits granted)
TENANTS: dict[str, tuple[str, str, int, str | None]] = {
    "acme": ("Acme Corp", "pro", 10, None),
    "globex": ("Globex Industries", "starter", 6, None),
    "initech": ("Initech Systems", "prepaid", 8, "2000"),
    "hooli": ("Hooli", "prepaid", 3, "500"),
    "umbrella": ("Umbrella Holdings", "pro", 0, None),
    "wayne": ("Wayne Enterprises", "free", 0, None),  # refused, then upgrades to pro
    "stark": ("Stark Industries", "free", 0, None),  # refused, stays
}
WHAT_IF = {"plan": "starter", "markup": "1.6"}  # starter sells below cost: what if it did not
PREPAID = ("hooli", "initech")


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _seed(url: str) -> dict[str, str]:
    keys = {}
    with httpx.Client(base_url=url, headers=admin_headers(), timeout=10.0) as admin:
        for tenant, (name, plan, _sent, granted) in TENANTS.items():
            r = admin.post("/admin/v1/tenants", json={"id": tenant, "name": name, "plan": plan})
            assert r.status_code == 201, r.text
            r = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "backend"})
            assert r.status_code == 201, r.text
            keys[tenant] = r.json()["key"]
            if granted is not None:
                body = {"amount": granted, "idempotency_key": f"order-{tenant}"}
                r = admin.post(f"/admin/v1/tenants/{tenant}/credits", json=body)
                assert r.status_code == 201, r.text
        with httpx.Client(base_url=url, timeout=10.0) as client:
            for tenant, (_name, _plan, sent, _granted) in TENANTS.items():
                _traffic(client, keys[tenant], sent)
            for tenant in ("wayne", "stark"):  # refused by the wall: upsell moments
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
                r = client.post("/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {keys[tenant]}"})  # fmt: skip
                assert r.status_code == 429 and "budget_exceeded" in r.text, r.text
        r = admin.patch("/admin/v1/tenants/wayne", json={"plan": "pro"})  # converts
        assert r.status_code == 200, r.text
        _moments_written(admin)
    return keys


def _moments_written(admin: httpx.Client) -> None:
    """The server writes upsell moments in the background: wait (up to 10 s) for both."""
    deadline = time.monotonic() + 10
    while True:
        report = admin.get("/admin/v1/upsell", params={"month": this_month()}).json()
        if report["total"]["tenants_refused"] == 2:
            return
        assert time.monotonic() < deadline, report
        time.sleep(0.05)  # polling interval; the deadline bounds the wait


@pytest.fixture(scope="module")
def revenue_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("revenue")
    config = write_config(directory, plans=PLANS, default_plan="pro")
    with serve(config, cwd=directory) as server:
        keys = _seed(server.base_url)
        with httpx.Client(base_url=server.base_url, headers=admin_headers(), timeout=10.0) as c:
            yield Site(server, keys, c)
        assert not any(k in server.output for k in (*keys.values(), ADMIN_KEY))


def expected(site: Site) -> dict[str, Any]:
    """The admin API's answers the revenue page must show."""
    month = this_month()
    start, end = (str(int(x)) for x in month_window(month))
    return {
        "profitability": site.api("/admin/v1/plan-profitability", month=month)["data"],
        "top": {
            by: site.api("/admin/v1/top-spenders", start=start, end=end, by=by, n="10")
            for by in ("revenue", "cost")
        },  # fmt: skip
        "credits": {t: site.api(f"/admin/v1/tenants/{t}/credits") for t in PREPAID},
        "upsell": site.api("/admin/v1/upsell", month=month),
    }


def what_if(site: Site) -> dict[str, Any]:
    """The admin API's what-if the page's form asks for."""
    r = site.admin.post("/admin/v1/reprice", json={"month": this_month(), **WHAT_IF})
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    return report


def check_what_if(text: str, want: dict[str, Any]) -> None:
    page = Page(text)
    rows = page.having("data-repriced")
    assert [r.attrs["data-repriced"] for r in rows] == [d["tenant"] for d in want["data"]]
    assert [r.attrs["data-repriced"] for r in rows] == ["globex"]
    assert want["data"][0]["margin_before_usd"].startswith("-")  # a loss ...
    assert not want["data"][0]["margin_after_usd"].startswith("-")  # ... made good
    for row, line in zip(rows, want["data"], strict=True):
        for name in ("revenue_before_usd", "revenue_after_usd", "margin_after_usd"):
            assert page.cell(row, name) == line[name], (line["tenant"], name)
    total = page.one(data_repriced_total=str(want["total"]["tenants"]))
    assert page.cell(total, "revenue_after_usd") == want["total"]["revenue_after_usd"]


def check_revenue_page(text: str, want: dict[str, Any]) -> None:
    """The revenue page's cells against the API's answers."""
    page = Page(text)
    plans = want["profitability"]
    assert [p["plan"] for p in plans] == ["free", "prepaid", "pro", "starter"]
    for line in plans:
        row = page.one(data_plan=line["plan"])
        for name in ("tenants", "margin_p10_usd", "margin_p50_usd", "margin_p90_usd", "margin_usd"):
            assert page.cell(row, name) == str(line[name]), (line["plan"], name)
        heavy = line["p90_usage_tenant"]
        assert page.one(row, data_field="p90_usage_tenant").attrs["data-tenant"] == heavy["tenant"]
    assert not plans[3]["p90_usage_tenant"]["profitable"]  # starter sells below cost
    for by, top in want["top"].items():
        ranking = page.one(data_ranking=by)
        rows = page.having("data-spender", ranking)
        assert [r.attrs["data-spender"] for r in rows] == [s["tenant"] for s in top["data"]]
        for row, s in zip(rows, top["data"], strict=True):
            assert page.cell(row, "amount_usd") == s["amount_usd"], (by, s["tenant"])
    for tenant, view in want["credits"].items():
        row = page.one(data_credits=tenant)
        for name in ("balance", "burned", "granted"):
            assert page.cell(row, name) == view[name], (tenant, name)
    upsell = want["upsell"]
    assert [(g["plan"], g["converted_tenants"]) for g in upsell["by_plan"]] == [("free", ["wayne"])]
    for line, row in ((upsell["by_plan"][0], page.one(data_upsell_plan="free")),
                      (upsell["total"], page.one(data_upsell_total="14"))):  # fmt: skip
        for name in ("moments", "tenants_refused", "tenants_converted", "converted_revenue_usd"):
            assert page.cell(row, name) == str(line[name]), name
        assert page.cell(row, "conversion_rate_percent") == "50.00%"


def test_the_served_revenue_page_over_http(revenue_site: Site) -> None:
    """No browser: the real server's page, read as HTML, holds the API's numbers."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=revenue_site.url, timeout=10.0) as client:
        r = client.post("/dashboard/signin", data={"key": ADMIN_KEY}, headers=form)
        assert r.status_code == 303, r.text
        r = client.get("/dashboard/revenue")
        assert r.status_code == 200, r.text
        check_revenue_page(r.text, expected(revenue_site))
        r = client.get("/dashboard/revenue", params=WHAT_IF)
        assert r.status_code == 200, r.text
        check_what_if(r.text, what_if(revenue_site))


def test_the_revenue_page_in_a_browser(revenue_site: Site, tab: Watched) -> None:
    sign_in_as_admin(revenue_site, tab)
    page = tab.page
    page.click("header nav a[href='/dashboard/revenue']")
    page.wait_for_url(f"{revenue_site.url}/dashboard/revenue")
    page.wait_for_load_state("networkidle")
    check_revenue_page(page.content(), expected(revenue_site))
    shown = page.inner_text("[data-plan=starter] [data-field=p90_usage_tenant]")
    assert "loses money" in shown  # the badge is visible text, not only markup
    assert "wayne" in page.inner_text("[data-upsell-plan=free] td:last-child")  # converted
    page.screenshot(path=str(DOCS / "dashboard-revenue.png"), full_page=True)
    form = page.locator("form[data-form=reprice]")  # the what-if, through its form
    form.locator("select[name=plan]").select_option(WHAT_IF["plan"])
    form.locator("input[name=markup]").fill(WHAT_IF["markup"])
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/dashboard/revenue\?.*markup=1\.6.*"))
    page.wait_for_load_state("networkidle")
    check_what_if(page.content(), what_if(revenue_site))
    page.locator("#reprice").screenshot(path=str(DOCS / "dashboard-reprice.png"))
    page.click("a[rel=prev]")
    page.wait_for_url(re.compile(r".*/dashboard/revenue\?month=\d{4}-\d{2}$"))
    assert "No tenants this month." in page.inner_text("#profitability")
    tab.clean()


def test_a_prepaid_tenants_balance_burn_and_invoice_in_a_browser(
    revenue_site: Site, tab: Watched
) -> None:
    page = tab.page
    page.goto(signin_link(revenue_site.url, revenue_site.keys["initech"]))
    page.wait_for_url(f"{revenue_site.url}/dashboard")
    chart_drawn(tab)
    credits = revenue_site.api("/admin/v1/tenants/initech/credits")
    invoice = revenue_site.api("/admin/v1/tenants/initech/invoice", month=this_month())
    for name in ("balance", "reserved", "burned", "granted"):
        assert page.inner_text(f"#credits [data-credits={name}]") == credits[name], name
    assert page.inner_text("#credits [data-credits=month_burn]") == invoice["credits_burned"]
    assert page.inner_text("#invoice [data-invoice=total]") == f"${invoice['total_usd']}"
    kinds = [r.get_attribute("data-line") for r in page.locator("#invoice [data-line]").all()]
    assert kinds == [line["kind"] for line in invoice["lines"]]
    assert page.locator("header nav a[href='/dashboard/revenue']").count() == 0
    page.screenshot(path=str(DOCS / "dashboard-tenant-credits.png"), full_page=True)
    page.goto(f"{revenue_site.url}/dashboard/revenue")  # a tenant is sent back to its page
    page.wait_for_url(f"{revenue_site.url}/dashboard")
    text = page.content()
    assert all(other not in text for other in TENANTS if other != "initech")
    tab.clean()
