"""Issue 15: the findings API (``GET /admin/v1/guardrails/findings``, ``GET /v1/me/guardrails/
findings``) and the dashboard page over ledger entries with findings, with their role
scoping; and ``max_findings_per_hour``: the key is paused once, with a reason naming the
guardrails and the count (of requests with findings), also when many entries race and when
two app instances share one SQLite file; a JWT caller's findings never pause its tenant."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.plans import Plan
from farebox.guardrails.findings_watch import FindingsWatch
from farebox.stores.findings import findings_of
from farebox.stores.memory.store import MemoryStore
from tests.contracts.builders import key, tenant
from tests.test_guardrail_findings import LEAK, NOW, App, entry, finding, running

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def seeded(gw: App) -> dict[str, Any]:
    """Two tenants with findings (and entries without), and a tenant_admin of acme."""
    acme, acme_key = await gw.setup("acme", plan="open")
    globex, _ = await gw.setup("globex", plan="open")
    r = await gw.client.post(
        "/admin/v1/admin-keys",
        headers=gw.admin,
        json={"name": "ta", "role": "tenant_admin", "tenant": "acme"},
    )
    assert r.status_code == 201, r.text
    rows = [
        entry("acme", acme, finding(text=LEAK), started_at=NOW - 100),
        entry("acme", acme, finding("secrets", "aws_access_key", "blocked"), started_at=NOW - 50),
        entry("acme", acme, started_at=NOW - 40),
        entry("globex", globex, finding("injection_rules", "instruction_override", "flagged"),
              finding("pii", "PHONE_NUMBER", "flagged"), started_at=NOW - 20),
    ]  # fmt: skip
    await gw.record(*rows, plan="open")
    return {"rows": rows, "acme_key": acme_key, "tenant_admin": r.json()["key"], "acme": acme}


def ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [row["request_id"] for row in r.json()["data"]]


async def test_the_admin_api_filters_findings(tmp_path: Path) -> None:
    async with running(tmp_path) as gw:
        s = await seeded(gw)
        rows = s["rows"]
        get = gw.client.get
        path, h = "/admin/v1/guardrails/findings", gw.admin
        every = await get(path, headers=h)
        assert ids(every) == [rows[3].request_id, rows[1].request_id, rows[0].request_id]
        assert LEAK not in every.text
        first = every.json()["data"][2]
        assert first["tenant_id"] == "acme" and first["key_id"] == s["acme"]
        assert first["findings"] == [
            {
                "detector": "pii",
                "category": "EMAIL_ADDRESS",
                "action": "redacted",
                "score": 0.93,
                "where": "user",
            }
        ]
        assert set(first) >= {
            "request_id",
            "tenant_id",
            "key_id",
            "workspace",
            "user",
            "model",
            "endpoint",
            "status",
            "at",
            "findings",
        }
        assert ids(await get(path, params={"tenant": "acme"}, headers=h)) == [
            rows[1].request_id, rows[0].request_id]  # fmt: skip
        assert ids(await get(path, params={"detector": "pii"}, headers=h)) == [
            rows[3].request_id,
            rows[0].request_id,
        ]  # any finding of the request matches
        assert ids(await get(path, params={"action": "blocked"}, headers=h)) == [rows[1].request_id]
        window = {"from": str(NOW - 60), "to": "2030-01-01T00:00:00Z"}  # ISO or unix seconds
        assert ids(await get(path, params=window, headers=h)) == [
            rows[3].request_id, rows[1].request_id]  # fmt: skip
        page = await get(path, params={"limit": 2}, headers=h)
        nxt = await get(path, params={"limit": 2, "cursor": page.json()["next_cursor"]}, headers=h)
        assert ids(page) + ids(nxt) == ids(every) and nxt.json()["next_cursor"] is None
        for bad in ({"from": "yesterday"}, {"action": "ignored"}, {"cursor": "x"},
                    {"limit": "0"}, {"detecter": "pii"}, {"tenant": "a b"}):  # fmt: skip
            r = await get(path, params=bad, headers=h)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"]["param"] in {*bad, "detecter"}, r.text


async def test_a_tenant_admin_and_a_tenant_key_see_their_own_tenant_only(tmp_path: Path) -> None:
    async with running(tmp_path) as gw:
        s = await seeded(gw)
        rows = s["rows"]
        ta = {"Authorization": f"Bearer {s['tenant_admin']}"}
        path = "/admin/v1/guardrails/findings"
        own = [rows[1].request_id, rows[0].request_id]
        assert ids(await gw.client.get(path, headers=ta)) == own  # forced to its tenant
        assert ids(await gw.client.get(path, params={"tenant": "acme"}, headers=ta)) == own
        r = await gw.client.get(path, params={"tenant": "globex"}, headers=ta)
        assert r.status_code == 404 and "globex" not in r.text.replace("'globex'", "")
        mine = {"Authorization": f"Bearer {s['acme_key']}"}
        me = await gw.client.get("/v1/me/guardrails/findings", headers=mine)
        assert ids(me) == own and "globex" not in me.text
        r = await gw.client.get("/v1/me/guardrails/findings", params={"tenant": "globex"},
                                headers=mine)  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["param"] == "tenant"
        r = await gw.client.get("/v1/me/guardrails/findings", params={"detector": "pii"},
                                headers=mine)  # fmt: skip
        assert ids(r) == [rows[0].request_id]


async def test_the_dashboard_page_counts_by_tenant_and_detector(tmp_path: Path) -> None:
    async with running(tmp_path) as gw:
        s = await seeded(gw)
        owner = await _signed_in(gw, gw.admin["Authorization"].split()[1])
        page = await gw.client.get("/dashboard/guardrails", headers=owner)
        assert page.status_code == 200, page.text
        text = page.text
        assert 'data-total="findings">4<' in text and 'data-total="blocked">1<' in text
        assert 'data-tenant="globex" data-detector="injection_rules"' in text
        assert 'data-tenant="acme" data-detector="secrets"' in text
        assert s["rows"][3].request_id in text and LEAK not in text
        only = await gw.client.get("/dashboard/guardrails?tenant=acme&detector=pii",
                                   headers=owner)  # fmt: skip
        assert 'data-total="findings">1<' in only.text and "globex" not in only.text
        for who in (s["tenant_admin"], s["acme_key"]):  # a tenant's sessions: its own only
            cookie = await _signed_in(gw, who)
            mine = await gw.client.get("/dashboard/guardrails?tenant=globex", headers=cookie)
            assert mine.status_code == 200 and 'data-total="findings">2<' in mine.text
            assert "globex" not in mine.text and s["rows"][3].request_id not in mine.text
        bad = await gw.client.get("/dashboard/guardrails?hours=5", headers=owner)
        assert bad.status_code == 400


async def _signed_in(gw: App, key_text: str) -> dict[str, str]:
    r = await gw.client.post("/dashboard/signin", data={"key": key_text}, headers=FORM)
    assert r.status_code == 303, r.text
    found = re.search(r"farebox_dashboard=([^;]+)", r.headers["set-cookie"])
    assert found
    gw.client.cookies.clear()
    return {"Cookie": f"farebox_dashboard={found.group(1)}"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.dictionaries(st.sampled_from(["detector", "category", "action", "from", "to",
                                               "cursor", "limit", "key", "tenant"]),
                              st.text(max_size=30), max_size=4))  # fmt: skip
def test_bad_input_is_a_400_never_a_500(params: dict[str, str]) -> None:
    from farebox.api.admin.guardrails import findings_query
    from farebox.errors import InvalidRequest

    async def run() -> None:
        try:
            query = findings_query(params)
        except InvalidRequest:
            return
        store = MemoryStore()
        with pytest.raises(InvalidRequest) if query.cursor is not None else _nothing():
            await store.findings.page(query)

    asyncio.run(run())


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


# max_findings_per_hour ------------------------------------------------------------------
async def test_a_key_over_its_hourly_findings_is_paused_once_with_a_reason(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as gw:
        key_id, secret = await gw.setup("acme")  # plan default: max_findings_per_hour 5
        two = (finding(), finding("secrets", "aws_access_key", "blocked"))
        await gw.record(entry("acme", key_id, *two), entry("acme", key_id, *two))
        assert await gw.watch.flush() == []  # 2 requests (4 findings): under the limit
        assert not (await gw.store.get_key(key_id)).paused
        await asyncio.gather(*(gw.record(entry("acme", key_id, *two)) for _ in range(10)))
        assert await gw.watch.flush() == [key_id]  # 12 requests: crossed once
        stored = await gw.store.get_key(key_id)
        assert stored.paused and "guardrails" in stored.pause_reason
        assert "12 requests with findings in the last hour" in stored.pause_reason
        assert "max_findings_per_hour of 5" in stored.pause_reason
        await gw.record(entry("acme", key_id, *two))
        assert await gw.watch.flush() == []  # already over: no second pause
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        r = await gw.client.post("/v1/chat/completions", json=chat,
                                 headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
        assert r.status_code == 403 and r.json()["error"]["code"] == "key_paused"
        assert list(gw.watch.paused) == [("key", key_id)]


async def test_concurrent_flushes_in_one_process_pause_exactly_once(tmp_path: Path) -> None:
    async with running(tmp_path) as gw:
        key_id, _ = await gw.setup("acme")

        async def one() -> list[str]:
            await gw.record(entry("acme", key_id, finding()))
            return await gw.watch.flush()

        crossed = await asyncio.gather(*(one() for _ in range(30)))
    assert sum(len(c) for c in crossed) == 1 and list(gw.watch.paused) == [("key", key_id)]


async def test_two_app_instances_on_one_sqlite_file_pause_exactly_once(tmp_path: Path) -> None:
    async with running(tmp_path) as one, running(tmp_path) as two:
        key_id, _ = await one.setup("acme")

        async def burst(gw: App) -> list[str]:
            out: list[str] = []
            for _ in range(8):
                await gw.record(entry("acme", key_id, finding()))
                out += await gw.watch.flush()
            return out

        crossed = await asyncio.gather(burst(one), burst(two), burst(one), burst(two))
        paused = [*one.watch.paused, *two.watch.paused]
        stored = await two.store.get_key(key_id)
    assert sum(len(c) for c in crossed) == 1 and paused == [("key", key_id)]
    assert stored.paused and "guardrails" in stored.pause_reason


async def test_a_jwt_callers_findings_never_pause_its_tenant() -> None:
    store = MemoryStore()
    await store.create_tenant(tenant("acme", plan="default"))
    await store.create_key(key("k1", "acme"))
    watch = FindingsWatch(store, findings_of(store), None, clock=lambda: NOW)
    watch.plans = lambda name: _plan_with_limit(2)
    for _ in range(3):
        watch.observe(entry("acme", "jwt:acme", finding()), "default")
    assert await watch.flush() == ["jwt:acme"]  # crossed: an alert, no pause
    stored = await store.get_tenant("acme")
    assert stored is not None and not stored.paused
    assert list(watch.paused) == []
    assert not (await store.get_key("k1")).paused  # type: ignore[union-attr]


def _plan_with_limit(limit: int) -> Plan:
    from dataclasses import replace

    from farebox.core.guardrails import GuardrailPolicy

    return replace(Plan(name="default", models=("*",)),
                   guardrails=GuardrailPolicy(max_findings_per_hour=limit))  # fmt: skip


async def test_without_a_limit_nothing_is_tallied() -> None:
    store = MemoryStore()
    watch = FindingsWatch(store, findings_of(store), None, clock=lambda: NOW)
    watch.plans = lambda name: Plan(name=name, models=("*",))
    watch.observe(entry("acme", "k1", finding()), "default")
    assert await watch.flush() == [] and await store.findings.tally("k1", NOW, 0) == (0, 0)
