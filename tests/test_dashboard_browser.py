"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright for Python through ``executable_path``; never a browser download) against a real
``farebox serve`` on loopback, with the mock provider and seeded traffic.

Each test signs in (as the admin through the form, as a tenant through the one-click link),
fails on any console error, page error, failed request or response of 400 and above, and
checks the page's numbers against the admin API's. The admin and tenant screenshots in
``docs/`` are made here. Without ``/usr/bin/chromium`` the tests skip, saying so, unless
``FAREBOX_REQUIRE_SERVICES=1`` (as in CI, where ``.ci/run`` installs it): then they fail.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from farebox.api.dashboard import signin_link
from farebox.core.anomaly import Incident
from farebox.stores.sqlite.store import SQLiteStore
from tests import browser as harness
from tests.browser import DOCS, Watched, chromium_or_skip
from tests.e2e import ADMIN_KEY, ServerProcess, admin_headers, db_path, serve, write_config

browser, tab = harness.browser, harness.tab  # the harness fixtures: Chromium, a watched tab

TENANTS = {  # id: (name, plan)
    "acme": ("Acme Corp", "pro"),
    "globex": ("Globex Industries", "free"),
    "initech": ("Initech Systems", "pro"),
    "umbrella": ("Umbrella Holdings", "pro"),
}
TRAFFIC = {  # id: requests sent (features and users rotate)
    "acme": 14,
    "globex": 6,
    "initech": 9,
    "umbrella": 4,
}
PAUSED = ("initech", "umbrella")  # initech is resumed from the page; umbrella stays paused
PLANS: dict[str, Any] = {
    "pro": {
        "models": ["*"],
        "budgets": [{"period": "day", "limit_usd": "0.05"}, {"period": "month", "limit_usd": "2"}],
        "rate_limits": [{"scope": "key", "requests_per_minute": 600}],
        "pricing": {"markup": "1.3", "monthly_fee_usd": "49"},
        "cache": {"mode": "exact", "hit_price": "0.5"},  # repeated questions are hits
    },
    "free": {
        "models": ["gpt-4o-mini"],
        "budgets": [{"period": "month", "limit_usd": "0.01"}],
        "rate_limits": [{"scope": "key", "requests_per_minute": 60}],
        "pricing": {"markup": "1.5"},
    },
}


@dataclass
class Site:
    server: ServerProcess
    keys: dict[str, str]
    admin: httpx.Client

    @property
    def url(self) -> str:
        return self.server.base_url

    def api(self, path: str, **params: str) -> Any:
        r = self.admin.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


def _open_incident(database: Path, tenant: str) -> None:
    """An anomaly incident on record for ``tenant`` (what the watch opens when it pauses)."""

    async def write() -> None:
        store = SQLiteStore(database)
        await store.open()
        try:
            now = time.time()
            incident = Incident(
                id=f"inc_{tenant}", tenant_id=tenant, key_id="", target="tenant", target_key="",
                metric="requests", observed=720, baseline=30, threshold=150,
                opened_at=now, dedup_key=f"farebox:{tenant}:requests",
            )  # fmt: skip
            assert await store.traffic.open_incident(incident, now - 3600)
        finally:
            await store.close()

    asyncio.run(write())


def _seed(site_url: str) -> dict[str, str]:
    keys = {}
    with httpx.Client(base_url=site_url, headers=admin_headers(), timeout=10.0) as admin:
        for tenant, (name, plan) in TENANTS.items():
            r = admin.post("/admin/v1/tenants", json={"id": tenant, "name": name, "plan": plan})
            assert r.status_code == 201, r.text
            r = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "backend"})
            assert r.status_code == 201, r.text
            keys[tenant] = r.json()["key"]
        with httpx.Client(base_url=site_url, timeout=10.0) as client:
            for tenant, count in TRAFFIC.items():
                _traffic(client, keys[tenant], count)
        for tenant in PAUSED:
            r = admin.post(f"/admin/v1/tenants/{tenant}/pause", json={"reason": "runaway loop"})
            assert r.status_code == 200 and r.json()["paused"], r.text
    return keys


def _traffic(client: httpx.Client, key: str, count: int) -> None:
    features, users = ("chat", "search", "summary"), ("ana", "bo", "cy")
    for i in range(count):
        headers = {
            "Authorization": f"Bearer {key}",
            "X-Farebox-Feature": features[i % 3],
            "X-Farebox-User": users[i % 2],
            "X-Farebox-Metadata": json.dumps({"env": "prod" if i % 2 else "staging"}),
        }
        body = {"model": "gpt-4o-mini", "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Hello number {i % 4}"}]}  # fmt: skip
        r = client.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium_or_skip()
    directory = tmp_path_factory.mktemp("dashboard")
    unused = "http://127.0.0.1:9"  # never delivered to (in_serve: false)
    sinks = {"openmeter": {"kind": "openmeter", "base_url": unused}}
    config = write_config(
        directory, plans=PLANS, default_plan="pro",
        billing={"in_serve": False, "sinks": sinks},
    )  # fmt: skip
    _open_incident(db_path(directory), "umbrella")
    with serve(config, cwd=directory) as server:
        keys = _seed(server.base_url)
        with httpx.Client(base_url=server.base_url, headers=admin_headers(), timeout=10.0) as c:
            yield Site(server, keys, c)
        assert not any(k in server.output for k in (*keys.values(), ADMIN_KEY))


def chart_drawn(tab: Watched) -> None:
    tab.page.wait_for_selector("#chart[data-points] canvas")
    assert tab.page.get_attribute("#chart", "data-points") == "48"


def sign_in(url: str, tab: Watched, key: str) -> None:
    """Through the sign-in form, as a person would."""
    page = tab.page
    page.goto(f"{url}/dashboard")
    assert page.url.endswith("/dashboard/signin")
    page.fill("#key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_url(f"{url}/dashboard")
    chart_drawn(tab)  # its data has arrived: leaving now aborts nothing


def sign_in_as_admin(site: Site, tab: Watched) -> None:
    sign_in(site.url, tab, ADMIN_KEY)


def cell(tab: Watched, row: str, name: str) -> str:
    text: str = tab.page.inner_text(f"{row} [data-field={name}]")
    return text.split()[0].lstrip("$")


def test_the_admin_view_shows_the_admin_apis_numbers(site: Site, tab: Watched) -> None:
    sign_in_as_admin(site, tab)
    chart_drawn(tab)
    margins = site.api("/admin/v1/margins", month=time.strftime("%Y-%m", time.gmtime()))
    for line in margins["data"]:
        row = f"[data-tenant-row={line['tenant']}]"
        assert cell(tab, row, "requests") == str(line["requests"])
        for name in ("cost", "revenue", "margin"):
            assert cell(tab, row, name) == line[f"{name}_usd"], (line["tenant"], name)
    total = margins["total"]
    page = tab.page
    assert page.inner_text("[data-total=requests]") == str(total["requests"])
    assert page.inner_text("[data-total=cost]") == f"${total['cost_usd']}"
    assert page.inner_text("[data-total=revenue]") == f"${total['revenue_usd']}"
    for tenant in TENANTS:
        paused = site.api(f"/admin/v1/tenants/{tenant}")["paused"]
        badge = page.locator(f"[data-tenant-row={tenant}] [data-status=paused]")
        assert badge.count() == int(paused), tenant
    assert page.locator("[data-tenant-row=umbrella] [data-status=anomaly]").count() == 1
    budgets = site.api("/admin/v1/tenants/acme/budgets")["data"]
    shown = page.inner_text("[data-tenant-row=acme] .budgets")
    assert all(f"${b['used_usd']}" in shown for b in budgets) and budgets
    export = site.api("/admin/v1/export")["sinks"]["openmeter"]
    assert page.inner_text("[data-sink=openmeter] td:nth-child(2)") == str(
        export["pending_entries"]
    )
    for tenant in TENANTS:  # the cache columns: GET /admin/v1/tenants/{id}/cache's numbers
        cache = site.api(f"/admin/v1/tenants/{tenant}/cache")
        row = f"[data-tenant-row={tenant}]"
        assert cell(tab, row, "cache_hits") == str(cache["hits"]), tenant
        assert cell(tab, row, "saved") == cache["saved_usd"], tenant
        rate = page.get_attribute(f"{row} [data-field=hit_rate]", "data-hit-rate")
        assert rate == (cache["hit_rate"] or ""), tenant
    top = [s.get_attribute("data-spender") for s in page.locator("[data-spender]").all()]
    spent = sorted(margins["data"], key=lambda x: -Decimal(x["cost_usd"]))
    assert top == [x["tenant"] for x in spent if x["requests"]][:5]
    page.screenshot(path=str(DOCS / "dashboard-admin.png"), full_page=True)
    for path in ("/dashboard/requests", "/dashboard/tenants/acme"):
        page.goto(f"{site.url}{path}")
        page.wait_for_load_state("networkidle")
    assert "Acme Corp" in page.inner_text("h1")
    tab.clean()


def test_the_tenant_view_shows_its_own_numbers_and_no_other_tenant(
    site: Site, tab: Watched
) -> None:
    page = tab.page
    page.goto(signin_link(site.url, site.keys["acme"]))
    page.wait_for_url(f"{site.url}/dashboard")
    assert "#" not in page.url and site.keys["acme"] not in page.url
    chart_drawn(tab)
    usage = site.api("/admin/v1/usage", tenant="acme")["data"][0]
    assert page.inner_text("[data-usage-total=requests]") == str(usage["requests"])
    assert page.inner_text("[data-usage-total=revenue]") == f"${usage['revenue_usd']}"
    for row in site.api("/admin/v1/usage", tenant="acme", group_by="model")["data"]:
        shown = page.inner_text(f"[data-usage-model='{row['model']}']")
        assert str(row["requests"]) in shown and f"${row['revenue_usd']}" in shown
    for b in site.api("/admin/v1/tenants/acme/budgets")["data"]:
        assert f"${b['used_usd']}" in page.inner_text("#budgets")
    keys = site.api("/admin/v1/tenants/acme/keys")["data"]
    assert page.locator("[data-key]").count() == len(keys)
    cache = site.api("/admin/v1/tenants/acme/cache")
    for name in ("hits", "misses", "entries"):
        assert page.inner_text(f"#cache [data-cache={name}]") == str(cache[name]), name
    assert page.inner_text("#cache [data-cache=saved]") == f"${cache['saved_usd']}"
    shown_rate = page.get_attribute("#cache [data-cache=hit_rate]", "data-hit-rate")
    assert shown_rate == (cache["hit_rate"] or "")
    page.screenshot(path=str(DOCS / "dashboard-tenant.png"), full_page=True)
    page.goto(f"{site.url}/dashboard/requests")
    page.wait_for_load_state("networkidle")
    for path in ("/dashboard", "/dashboard/requests"):
        page.goto(f"{site.url}{path}")
        text = page.content()
        for other, (name, _plan) in TENANTS.items():
            if other != "acme":
                assert other not in text and name not in text, (path, other)
        assert site.keys["acme"] not in text
    tab.clean()


def test_resuming_a_paused_tenant_from_the_page(site: Site, tab: Watched) -> None:
    assert site.api("/admin/v1/tenants/initech")["paused"] is True
    sign_in_as_admin(site, tab)
    tab.page.click("button[data-resume=initech]")
    tab.page.wait_for_url(re.compile(r".*/dashboard#anomalies$"))
    assert site.api("/admin/v1/tenants/initech")["paused"] is False
    assert tab.page.locator("[data-tenant-row=initech] [data-status=paused]").count() == 0
    tab.clean()


def test_a_mutation_without_the_csrf_token_is_refused(site: Site, tab: Watched) -> None:
    sign_in_as_admin(site, tab)
    cookies = {c["name"]: c["value"] for c in tab.page.context.cookies()}
    assert cookies, "the sign-in set no cookie"
    jar = "; ".join(f"{k}={v}" for k, v in cookies.items())
    form = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": jar}
    with httpx.Client(base_url=site.url, timeout=10.0) as raw:
        r = raw.post("/dashboard/tenants/umbrella/resume", headers=form, content=b"")
        assert r.status_code == 403
        r = raw.post("/dashboard/tenants/umbrella/resume", headers=form,
                     content=b"csrf_token=not-the-token")  # fmt: skip
        assert r.status_code == 403
        assert raw.get("/dashboard", headers={"Cookie": jar}).status_code == 200
    assert site.api("/admin/v1/tenants/umbrella")["paused"] is True
    tab.clean()


def _log_ids(tab: Watched) -> list[str]:
    rows = tab.page.locator("#request-log [data-request]").all()
    return [str(r.get_attribute("data-request")) for r in rows]


def test_the_request_log_filters_and_pages(site: Site, tab: Watched) -> None:
    sign_in_as_admin(site, tab)
    page = tab.page
    page.goto(f"{site.url}/dashboard/requests?tenant=acme&limit=5")
    seen: list[str] = []
    while True:
        ids = _log_ids(tab)
        assert 0 < len(ids) <= 5 and not set(ids) & set(seen)
        seen += ids
        if page.locator("#older").count() == 0:
            break
        page.click("#older")
        page.wait_for_load_state("load")
    usage = site.api("/admin/v1/usage", tenant="acme")["data"][0]
    assert len(seen) == usage["requests"] == TRAFFIC["acme"]
    page.goto(f"{site.url}/dashboard/requests")
    page.fill("input[name=tenant]", "acme")
    page.fill("input[name=tag]", "env=prod")
    page.select_option("select[name=status]", "ok")
    page.click(".filters button[type=submit]")
    page.wait_for_load_state("load")
    # _traffic tags odd ones prod; it asks 4 questions, so from the 5th on each is a cache hit
    prod = len([i for i in range(TRAFFIC["acme"]) if i % 2 and i < 4])
    assert len(_log_ids(tab)) == prod
    assert all("env=prod" in t for t in page.locator("#request-log tbody tr").all_inner_texts())
    assert "Cache" in page.inner_text("#request-log thead")
    page.goto(f"{site.url}/dashboard/requests?model=no-such-model")
    assert _log_ids(tab) == [] and "No requests match" in page.inner_text("#request-log")
    tab.clean()


def test_a_tenants_request_log_is_its_own_whatever_it_asks(site: Site, tab: Watched) -> None:
    page = tab.page
    page.goto(signin_link(site.url, site.keys["globex"]))
    page.wait_for_url(f"{site.url}/dashboard")
    chart_drawn(tab)
    page.goto(f"{site.url}/dashboard/requests?tenant=acme")
    ids = _log_ids(tab)
    assert len(ids) == TRAFFIC["globex"]
    text = page.content()
    assert all(other not in text for other in TENANTS if other != "globex")
    tab.clean()
