"""Issue [14] acceptance 4's browser scenario: in headless Chromium (Debian's, through
Playwright's ``executable_path``) against a real ``farebox serve`` on loopback, a
``tenant_admin`` signs in with its ``fba_`` key through the sign-in form, creates a workspace
with a monthly budget, creates a key in it (its secret shown once), revokes it; then the owner
signs in and finds those three changes on ``/dashboard/audit``, with the tenant_admin's key as
the actor. Any console error, page error, failed request or response of 400 and above fails
the test. Screenshots: ``docs/dashboard-workspaces.png``, ``docs/dashboard-audit.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests import browser as harness
from tests.browser import DOCS, Watched, chromium_or_skip
from tests.e2e import ADMIN_KEY, ServerProcess, admin_headers, serve, write_config
from tests.test_dashboard_browser import sign_in

browser, tab = harness.browser, harness.tab  # the harness fixtures: Chromium, a watched tab

PLANS: dict[str, Any] = {
    "pro": {
        "models": ["*"],
        "budgets": [{"period": "month", "limit_usd": "500"}],
        "rate_limits": [{"scope": "key", "requests_per_minute": 600}],
    },
}
WORKSPACE = "ml-team"


@dataclass
class Site:
    server: ServerProcess
    admin: httpx.Client
    tenant_admin_key: str
    tenant_admin_id: str
    other_key_id: str

    @property
    def url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium_or_skip()
    directory = tmp_path_factory.mktemp("dash-identity-browser")
    config = write_config(directory, plans=PLANS, default_plan="pro")
    with serve(config, cwd=directory) as server:
        with httpx.Client(base_url=server.base_url, headers=admin_headers(), timeout=10.0) as c:
            for tenant, name in (("acme", "Acme Corp"), ("globex", "Globex Industries")):
                r = c.post("/admin/v1/tenants", json={"id": tenant, "name": name})
                assert r.status_code == 201, r.text
            made = [c.post(f"/admin/v1/tenants/{t}/keys", json={"name": "backend"}).json()
                    for t in ("acme", "globex")]  # fmt: skip
            body = {"name": "acme-admin", "role": "tenant_admin", "tenant": "acme"}
            r = c.post("/admin/v1/admin-keys", json=body)
            assert r.status_code == 201, r.text
            admin = r.json()
            yield Site(server, c, admin["key"], admin["id"], made[1]["id"])
        assert admin["key"] not in server.output and ADMIN_KEY not in server.output


def test_a_tenant_admin_manages_workspaces_and_keys_and_the_owner_sees_it(
    site: Site, tab: Watched
) -> None:
    page = tab.page
    sign_in(site.url, tab, site.tenant_admin_key)
    assert "tenant_admin" in page.inner_text("header .who")
    page.click("#nav-workspaces")
    page.wait_for_url(f"{site.url}/dashboard/tenants/acme/workspaces")
    assert site.other_key_id not in page.content() and "globex" not in page.content()

    page.fill("#new-workspace input[name=id]", WORKSPACE)
    page.fill("#new-workspace input[name=name]", "ML team")
    page.fill("#new-workspace input[name=budget_usd]", "200")
    page.click("#new-workspace button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/tenants/acme/workspaces#workspaces$"))
    row = f"[data-workspace='{WORKSPACE}']"
    assert page.inner_text(f"{row} [data-field=month_usd]") == "$200"
    api = site.admin.get(f"/admin/v1/tenants/acme/workspaces/{WORKSPACE}").json()
    assert api["budgets"][0]["limit_usd"] == "200" and api["name"] == "ML team"

    page.fill("#new-key input[name=name]", "ana")
    page.select_option("#new-key select[name=workspace]", WORKSPACE)
    page.fill("#new-key input[name=alert_threshold]", "80")
    page.fill("#new-key input[name=metadata]", '{"user_email": "ana@acme.test"}')
    page.click("#new-key button[type=submit]")
    page.wait_for_selector("[data-secret]")
    secret = page.inner_text("[data-secret]").strip()
    key_id = str(page.get_attribute("[data-key-id]", "data-key-id"))
    assert secret.startswith("fbx_") and page.content().count(secret) == 1
    me = httpx.get(f"{site.url}/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200  # the new key works
    page.click("#back")
    page.wait_for_url(re.compile(r".*/workspaces#keys$"))
    assert secret not in page.content()  # shown once, never again
    key_row = f"[data-key='{key_id}']"
    assert page.inner_text(f"{key_row} [data-field=workspace]") == WORKSPACE
    assert page.inner_text(f"{key_row} [data-field=status]") == "active"

    page.click(f"button[data-revoke='{key_id}']")
    page.wait_for_url(re.compile(r".*/workspaces#keys$"))
    assert page.inner_text(f"{key_row} [data-field=status]") == "revoked"
    me = httpx.get(f"{site.url}/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 401
    page.screenshot(path=str(DOCS / "dashboard-workspaces.png"), full_page=True)
    tab.clean()

    page.click("header .who button[type=submit]")  # sign out
    page.wait_for_url(f"{site.url}/dashboard/signin")
    sign_in(site.url, tab, ADMIN_KEY)  # the owner
    page.click("#nav-audit")
    page.wait_for_url(f"{site.url}/dashboard/audit")
    assert page.get_attribute("#chain", "data-chain") == "intact"
    page.fill("input[name=actor]", site.tenant_admin_id)
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/audit\?actor=.*"))
    rows = page.locator("#audit-log tr[data-seq]").all()
    seen = [(r.get_attribute("data-action"), r.get_attribute("data-target")) for r in rows]
    assert seen == [
        ("POST /dashboard/tenants/{tenant_id}/keys/{key_id}/revoke", f"key:{key_id}"),
        ("POST /dashboard/tenants/{tenant_id}/keys", f"key:{key_id}"),
        ("POST /dashboard/tenants/{tenant_id}/workspaces", f"workspace:{WORKSPACE}"),
    ], seen
    assert {r.get_attribute("data-actor") for r in rows} == {site.tenant_admin_id}
    assert secret not in page.content()
    assert (
        page.inner_text("#audit-log tr[data-seq] [data-changed=revoked]") == "revoked: false → true"
    )
    page.screenshot(path=str(DOCS / "dashboard-audit.png"), full_page=True)
    api = site.admin.get("/admin/v1/audit", params={"actor": site.tenant_admin_id}).json()
    assert [r["seq"] for r in api["data"]] == [int(str(r.get_attribute("data-seq"))) for r in rows]
    tab.clean()
