"""Issue 15's findings on the dashboard, in headless Chromium (Debian's, through Playwright's
``executable_path``) against a real ``farebox serve`` on loopback: ledger entries with
findings are written to its SQLite file (as the guardrail stage writes them); the owner opens
``/dashboard/guardrails`` from the menu and sees the counts by tenant and detector and the
latest findings, matching the admin API; acme's ``tenant_admin`` sees acme's only. Any
console error, page error, failed request or response of 400 and above fails the test.
Screenshot: ``docs/dashboard-guardrails.png``."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from farebox.core.records import LedgerEntry
from farebox.stores.sqlite.store import SQLiteStore
from tests import browser as harness
from tests.browser import DOCS, Watched, chromium_or_skip
from tests.e2e import ADMIN_KEY, ServerProcess, admin_headers, serve, write_config
from tests.test_dashboard_browser import sign_in

browser, tab = harness.browser, harness.tab  # the harness fixtures: Chromium, a watched tab

PLANS: dict[str, Any] = {
    "pro": {"models": ["*"], "guardrails": {"prompt_injection": {"mode": "block"},
                                            "pii": {"mode": "redact", "engine": "builtin"},
                                            "secrets": {"mode": "block"},
                                            "max_findings_per_hour": 500}},
}  # fmt: skip
# (tenant, detector, category, action, count): the findings written, one request each
TRAFFIC = [
    ("acme", "pii", "EMAIL_ADDRESS", "redacted", 9),
    ("acme", "pii", "PHONE_NUMBER", "redacted", 4),
    ("acme", "injection_rules", "instruction_override", "blocked", 3),
    ("globex", "injection_rules", "system_prompt_extraction", "blocked", 6),
    ("globex", "secrets", "aws_access_key", "blocked", 2),
    ("globex", "abuse", "prompt_stuffing", "flagged", 1),
    ("initech", "pii", "CREDIT_CARD", "redacted", 5),
    ("initech", "injection_classifier", "jailbreak", "flagged", 2),
]


@dataclass
class Site:
    server: ServerProcess
    admin: httpx.Client
    tenant_admin_key: str
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.base_url


def ledger_entries(keys: dict[str, str], now: float) -> list[LedgerEntry]:
    out, n = [], itertools.count()
    for tenant, detector, category, action, count in TRAFFIC:
        for i in range(count):
            started = now - 60 * (3 * next(n) + 1)
            blocked = action == "blocked"
            finding = {"detector": detector, "category": category, "action": action,
                       "score": round(0.71 + (i % 3) * 0.09, 2), "where": "user"}  # fmt: skip
            out.append(LedgerEntry(
                request_id=f"req_{tenant}_{category.lower()}_{i:03d}", tenant_id=tenant,
                key_id=keys[tenant], endpoint="chat.completions", model_requested="gpt-4o-mini",
                model_served="" if blocked else "gpt-4o-mini", provider="" if blocked else "sim",
                status="blocked" if blocked else "ok", http_status=400 if blocked else 200,
                started_at=started, finished_at=started + 0.002, user=f"user-{i % 4}",
                guardrails=[finding]))  # fmt: skip
    return out


async def write_ledger(database: Path, entries: list[LedgerEntry]) -> None:
    store = SQLiteStore(database)  # another process on the server's file, as a worker is
    await store.open()
    try:
        await store.append_ledger(entries)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium_or_skip()
    directory = tmp_path_factory.mktemp("dash-guardrails-browser")
    config = write_config(
        directory, plans=PLANS, default_plan="pro", server={"single_process": False}
    )  # the test writes the ledger too
    with serve(config, cwd=directory) as server:
        with httpx.Client(base_url=server.base_url, headers=admin_headers(), timeout=10.0) as c:
            keys = {}
            for tenant, name in (("acme", "Acme Corp"), ("globex", "Globex Industries"),
                                 ("initech", "Initech")):  # fmt: skip
                r = c.post("/admin/v1/tenants", json={"id": tenant, "name": name})
                assert r.status_code == 201, r.text
                keys[tenant] = c.post(f"/admin/v1/tenants/{tenant}/keys",
                                      json={"name": "backend"}).json()["id"]  # fmt: skip
            body = {"name": "acme-admin", "role": "tenant_admin", "tenant": "acme"}
            r = c.post("/admin/v1/admin-keys", json=body)
            assert r.status_code == 201, r.text
            asyncio.run(write_ledger(directory / "farebox.db", ledger_entries(keys, time.time())))
            yield Site(server, c, r.json()["key"], keys)


# how far (px) any table cell of the page reaches past its card's content box, or any cell's
# content past the cell (a long request id is cut with an ellipsis, its whole id in its title)
OVERFLOW_JS = """() => {
  let worst = {px: 0, what: ''};
  for (const table of document.querySelectorAll('.card table')) {
    const card = table.closest('.card'), style = getComputedStyle(card);
    const right = card.getBoundingClientRect().right - parseFloat(style.paddingRight)
                  - parseFloat(style.borderRightWidth);
    for (const cell of table.querySelectorAll('th, td')) {
      const past = Math.max(cell.getBoundingClientRect().right - right,
                            cell.scrollWidth - cell.clientWidth);
      if (past > worst.px) worst = {px: past, what: table.id + ': ' + cell.textContent.trim()};
    }
  }
  return worst;
}"""


def test_the_owner_and_a_tenant_admin_see_the_findings(site: Site, tab: Watched) -> None:
    page = tab.page
    sign_in(site.url, tab, ADMIN_KEY)
    page.click("#nav-guardrails")
    page.wait_for_url(f"{site.url}/dashboard/guardrails")
    total = sum(count for *_, count in TRAFFIC)
    assert page.inner_text("[data-total=findings]") == str(total)
    blocked = sum(c for _, _, _, action, c in TRAFFIC if action == "blocked")
    assert page.inner_text("[data-total=blocked]") == str(blocked)
    row = "#by-tenant tr[data-tenant=globex][data-detector=injection_rules] td.num strong"
    assert page.inner_text(row) == "6"
    api = site.admin.get("/admin/v1/guardrails/findings", params={"limit": 50}).json()
    shown = [r.get_attribute("data-request") for r in page.locator("#latest-findings tr").all()]
    assert [r for r in shown if r] == [r["request_id"] for r in api["data"]]
    page.select_option("select[name=hours]", "168")
    page.click("#guardrail-filters button[type=submit]")
    page.wait_for_url(f"{site.url}/dashboard/guardrails?tenant=&detector=&hours=168")
    assert page.evaluate(OVERFLOW_JS)["px"] <= 0.5, page.evaluate(OVERFLOW_JS)
    long_id = "req_globex_system_prompt_extraction_000"
    cut = page.locator(f"#latest-findings tr[data-request={long_id}] code[title]")
    assert cut.get_attribute("title") == long_id  # the whole id, where the cell cuts it short
    page.screenshot(path=str(DOCS / "dashboard-guardrails.png"), full_page=True)
    tab.clean()

    page.click("header .who button[type=submit]")  # sign out
    page.wait_for_url(f"{site.url}/dashboard/signin")
    sign_in(site.url, tab, site.tenant_admin_key)
    page.click("#nav-guardrails")
    page.wait_for_url(f"{site.url}/dashboard/guardrails")
    acme = sum(c for tenant, *_, c in TRAFFIC if tenant == "acme")
    assert page.inner_text("[data-total=findings]") == str(acme)
    content = page.content()
    assert "globex" not in content and "initech" not in content
    assert site.keys["globex"] not in content
    tab.clean()
