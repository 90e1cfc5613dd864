"""Workspaces through the admin API and the data plane (issue 14): create, list, read, change
and delete a tenant's workspaces; keys created in one, with metadata and an alert threshold;
the key listing filtered by workspace and metadata, with each key's budgets in force; budgets
and rate limits inherited plan -> tenant -> workspace -> key and all enforced at once; the
workspace in ledger entries; bad input is a 4xx naming the problem, never a 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.money import parse_usd
from tests.conftest import ADMIN_KEY

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 40}  # fmt: skip
MOCK = {"kind": "mock", "seed": 1, "output_tokens": {"distribution": "fixed", "mean": 40}}
WS = "/admin/v1/tenants/acme/workspaces"


def config(**plan: Any) -> dict[str, Any]:
    return {"providers": {"sim": MOCK}, "plans": {"p": {"models": ["*"], **plan}},
            "default_plan": "p"}  # fmt: skip


@asynccontextmanager
async def acme_gateway(path: Path) -> AsyncIterator[tuple[Any, dict[str, str]]]:
    """A fresh SQLite gateway (this module's config) with tenant acme, run through its
    lifespan: its admin client and the admin headers (for hypothesis, which cannot take a
    function-scoped fixture)."""
    import httpx

    from farebox.app import create_app
    from farebox.config.settings import parse_settings

    settings_ = parse_settings({"database": f"sqlite:///{path / 'f.db'}", **config()},
                               source="t.yaml", env={"FAREBOX_ADMIN_KEY": ADMIN_KEY},
                               base_dir=path)  # fmt: skip
    app = create_app(settings_, announce=lambda _m: None)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g") as c:
            await c.post("/admin/v1/tenants", json={"id": "acme", "plan": "p"}, headers=admin)
            yield c, admin


async def setup(gw: Any) -> None:
    await gw.tenant("acme", "p")


async def test_workspace_crud_and_the_implicit_default(make_gateway: Any) -> None:
    async with make_gateway(config()) as gw:
        await setup(gw)
        c, admin = gw.client, gw.admin
        listed = (await c.get(WS, headers=admin)).json()["data"]
        assert [w["id"] for w in listed] == ["default"]
        budgets = [{"scope": "workspace", "period": "month", "limit_usd": "200"}]
        r = await c.post(WS, json={"id": "ml-team", "name": "ML", "budgets": budgets,
                                   "metadata": {"cost_center": "42"}}, headers=admin)  # fmt: skip
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["id"], made["tenant"], made["name"]) == ("ml-team", "acme", "ML")
        assert made["budgets"] == [{**budgets[0], "basis": "cost"}]
        assert (await c.post(WS, json={"id": "ml-team"}, headers=admin)).status_code == 409
        assert (await c.post(WS, json={"id": "default"}, headers=admin)).status_code == 409
        got = (await c.get(f"{WS}/ml-team", headers=admin)).json()
        assert got == made
        r = await c.patch(f"{WS}/ml-team", json={"name": "Machine learning"}, headers=admin)
        assert r.status_code == 200 and r.json()["name"] == "Machine learning"
        r = await c.patch(f"{WS}/default", json={"rate_limits": [{"scope": "workspace",
                          "requests_per_minute": 100}]}, headers=admin)  # fmt: skip
        assert r.status_code == 200, r.text
        assert [w["id"] for w in (await c.get(WS, headers=admin)).json()["data"]] == [
            "default", "ml-team"]  # fmt: skip
        r = await c.delete(f"{WS}/default", headers=admin)
        assert r.status_code == 409 and r.json()["error"]["code"] == "workspace_is_default"
        key = (await c.post("/admin/v1/tenants/acme/keys", json={"workspace": "ml-team"},
                            headers=admin)).json()  # fmt: skip
        r = await c.delete(f"{WS}/ml-team", headers=admin)
        assert r.status_code == 409 and r.json()["error"]["code"] == "workspace_has_keys"
        assert key["id"] in r.json()["error"]["message"]
        assert (await c.delete(f"/admin/v1/keys/{key['id']}", headers=admin)).status_code == 200
        r = await c.delete(f"{WS}/ml-team", headers=admin)
        assert r.status_code == 200 and r.json()["deleted"] is True
        assert (await c.get(f"{WS}/ml-team", headers=admin)).status_code == 404
        assert (await c.get("/admin/v1/tenants/nobody/workspaces", headers=admin)).status_code \
            == 404  # fmt: skip


async def test_workspace_overrides_refuse_tenant_wide_scopes(make_gateway: Any) -> None:
    async with make_gateway(config()) as gw:
        await setup(gw)
        for body in ({"id": "x", "budgets": [{"period": "day", "limit_usd": "5"}]},
                     {"id": "x", "rate_limits": [{"scope": "tenant", "concurrent": 1}]},
                     {"id": "x", "budgets": [{"scope": "workspace", "limit_usd": "-"}]},
                     {"id": "bad id!"}, {"id": "x", "extra": 1}):  # fmt: skip
            r = await gw.client.post(WS, json=body, headers=gw.admin)
            assert r.status_code == 400, (body, r.text)


async def test_keys_carry_workspace_metadata_threshold_and_list_filtered(
    make_gateway: Any,
) -> None:
    key_budget = [{"scope": "key", "period": "month", "limit_usd": "10"}]
    async with make_gateway(config(budgets=key_budget)) as gw:
        await setup(gw)
        c, admin = gw.client, gw.admin
        await c.post(WS, json={"id": "web"}, headers=admin)
        made = []
        for ws, email, threshold in (("web", "a@x.io", 75), ("web", "b@x.io", None),
                                     ("default", "a@x.io", None)):  # fmt: skip
            body: dict[str, Any] = {"workspace": ws, "metadata": {"user_email": email, "lvl": 3}}
            if threshold:
                body["alert_threshold"] = threshold
            r = await c.post("/admin/v1/tenants/acme/keys", json=body, headers=admin)
            assert r.status_code == 201, r.text
            made.append(r.json())
        assert (made[0]["workspace"], made[0]["alert_threshold"]) == ("web", 75)
        assert made[2]["workspace"] == "default" and made[2]["metadata"]["user_email"] == "a@x.io"
        r = await c.post("/admin/v1/tenants/acme/keys", json={"workspace": "nope"}, headers=admin)
        assert r.status_code == 404 and r.json()["error"]["code"] == "workspace_not_found"
        by_email = {"tenant": "acme", "metadata.user_email": "a@x.io"}
        r = await c.get("/admin/v1/keys", params=by_email, headers=admin)
        assert r.status_code == 200, r.text
        assert sorted(k["id"] for k in r.json()["data"]) == sorted([made[0]["id"], made[2]["id"]])
        r = await c.get("/admin/v1/keys", params={"tenant": "acme", "workspace": "web",
                                                  "metadata.lvl": "3"}, headers=admin)  # fmt: skip
        listed = r.json()["data"]
        assert sorted(k["id"] for k in listed) == sorted([made[0]["id"], made[1]["id"]])
        [limit] = listed[0]["usage_limits"]
        assert (limit["scope"], limit["limit_usd"], limit["used_usd"]) == ("key", "10.00", "0.00")
        assert {"rate_limits", "alert_threshold", "metadata", "workspace"} <= set(listed[0])
        r = await c.get("/admin/v1/keys", params={"metadata.nope": "1"}, headers=admin)
        assert r.status_code == 200 and r.json()["data"] == []
        assert (await c.get("/admin/v1/keys", params={"bogus": "1"}, headers=admin)).status_code \
            == 400  # fmt: skip
        r = await c.patch(
            f"/admin/v1/keys/{made[1]['id']}",
            json={"metadata": {"team": "z"}, "alert_threshold": 90},
            headers=admin,
        )
        assert r.status_code == 200 and (r.json()["metadata"], r.json()["alert_threshold"]) == (
            {"team": "z"}, 90)  # fmt: skip
        r = await c.patch(
            f"/admin/v1/keys/{made[1]['id']}",
            json={"alert_threshold": None, "workspace": "default"},
            headers=admin,
        )
        assert (r.json()["alert_threshold"], r.json()["workspace"]) == (None, "default")
        r = await c.patch(f"/admin/v1/keys/{made[1]['id']}", json={"workspace": "nope"},
                          headers=admin)  # fmt: skip
        assert r.status_code == 404 and r.json()["error"]["code"] == "workspace_not_found"
        for bad in ({"alert_threshold": 0}, {"alert_threshold": 101}, {"metadata": [1]},
                    {"metadata": {"x": "y" * 5000}}, {"workspace": "bad id"}):  # fmt: skip
            r = await c.patch(f"/admin/v1/keys/{made[1]['id']}", json=bad, headers=admin)
            assert r.status_code == 400, (bad, r.text)


async def test_every_level_holds_at_once_and_the_ledger_names_the_workspace(
    make_gateway: Any,
) -> None:
    """Tenant $X, workspace a $Y < X, workspace b's own override; each request is held
    against every level; the ledger's sums stay under every level's limit."""
    tenant_budget = [{"scope": "tenant", "period": "day", "limit_usd": "0.0004"}]
    plan_ws = [{"scope": "workspace", "period": "day", "limit_usd": "0.00025"}]
    async with make_gateway(config(budgets=plan_ws)) as gw:
        await gw.tenant("acme", "p")
        c, admin = gw.client, gw.admin
        await c.patch("/admin/v1/tenants/acme", json={"budgets": tenant_budget}, headers=admin)
        override = [{"scope": "workspace", "period": "day", "limit_usd": "0.0001"}]
        await c.post(WS, json={"id": "a"}, headers=admin)  # the plan's $0.00025
        await c.post(WS, json={"id": "b", "budgets": override}, headers=admin)  # $0.0001
        keys = {ws: await gw.key("acme", workspace=ws) for ws in ("a", "b")}

        async def call(ws: str) -> int:
            auth = {"Authorization": f"Bearer {keys[ws]}"}
            r = await c.post("/v1/chat/completions", json=CHAT, headers=auth)
            return r.status_code

        codes = await asyncio.gather(*(call("ab"[i % 2]) for i in range(60)))
        assert set(codes) <= {200, 429} and 429 in codes
        ledger = [e for e in await gw.ledger("acme") if e.status == "ok"]
        spent = {ws: sum(e.cost for e in ledger if e.workspace == ws) for ws in "ab"}
        assert spent["a"] <= parse_usd("0.00025") and spent["b"] <= parse_usd("0.0001")
        assert spent["b"] > 0 and sum(spent.values()) <= parse_usd("0.0004")
        assert {e.workspace for e in ledger} == {"a", "b"}
        r = await c.get("/admin/v1/usage", params={"tenant": "acme", "group_by": "workspace"},
                        headers=admin)  # fmt: skip
        assert r.status_code == 200, r.text
        usage = {row["workspace"]: parse_usd(row["cost_usd"]) for row in r.json()["data"]}
        assert usage == spent
        month = time.strftime("%Y-%m", time.gmtime(ledger[0].started_at))
        r = await c.get(
            "/admin/v1/margins",
            params={"month": month, "tenant": "acme", "group_by": "workspace"},
            headers=admin,
        )
        assert r.status_code == 200, r.text
        lines = {w["workspace"]: w for w in r.json()["workspaces"]}
        assert {ws: parse_usd(w["cost_usd"]) for ws, w in lines.items()} == spent
        assert sum(w["requests"] for w in lines.values()) == len(ledger)
        r = await c.get("/admin/v1/margins", params={"month": month, "group_by": "workspace"},
                        headers=admin)  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["param"] == "tenant"
        me = (await c.get("/v1/me", headers={"Authorization": f"Bearer {keys['b']}"})).json()
        mine = [b for b in me["budgets"] if b["scope"] == "workspace"]
        assert [(b["name"], b["limit_usd"]) for b in mine] == [("b", "0.0001")]


async def test_workspace_rate_limit_overrides_the_plans(make_gateway: Any) -> None:
    limits = [{"scope": "workspace", "requests_per_minute": 100}]
    async with make_gateway(config(rate_limits=limits)) as gw:
        await gw.tenant("acme", "p")
        tight = [{"scope": "workspace", "requests_per_minute": 2}]
        await gw.client.post(WS, json={"id": "slow", "rate_limits": tight}, headers=gw.admin)
        slow = {"Authorization": f"Bearer {await gw.key('acme', workspace='slow')}"}
        fast = {"Authorization": f"Bearer {await gw.key('acme')}"}
        codes = [(await gw.client.post("/v1/chat/completions", json=CHAT, headers=slow))
                 .status_code for _ in range(3)]  # fmt: skip
        assert codes == [200, 200, 429]
        r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=fast)
        assert r.status_code == 200  # the default workspace keeps the plan's 100
        shown = (await gw.client.get("/admin/v1/tenants/acme/limits", headers=gw.admin)).json()
        rpm = {w["id"]: w["rate_limits"][0]["requests_per_minute"] for w in shown["workspaces"]}
        assert rpm == {"default": 100, "slow": 2}
        assert sorted(k["rate_limits"][0]["requests_per_minute"] for k in shown["keys"]) == [2, 100]


async def test_a_keys_alert_threshold_fires_the_signed_budget_alert(make_gateway: Any) -> None:
    from tests.test_budget_sdk import HOOK_SECRET, receiver, verify

    key_budget = [{"scope": "key", "period": "day", "limit_usd": "0.001"}]
    async with receiver() as hook:
        cfg = {**config(budgets=key_budget),
               "budgets": {"alert_webhook_url": hook.url,
                           "alert_webhook_secret": "env:HOOK_SECRET"}}  # fmt: skip
        async with make_gateway(cfg, env={"HOOK_SECRET": HOOK_SECRET}) as gw:
            await gw.tenant("acme", "p")
            key = await gw.key("acme", alert_threshold=1)
            plain = await gw.key("acme")  # no threshold of its own: 2.5 % fires nothing
            for raw in (key, plain):
                auth = {"Authorization": f"Bearer {raw}"}
                r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=auth)
                assert r.is_success
            [event] = await hook.wait_for("acme", 1)
            alerts = (await gw.client.get("/admin/v1/budget-alerts", headers=gw.admin)).json()
    assert (event["type"], event["threshold_percent"], event["scope"]) == (
        "budget.threshold", 1, "key")  # fmt: skip
    assert event["budget"].startswith("key:") and event["limit_usd"] == "0.001"
    for headers, body in hook.received:
        verify(headers, body)  # signed like every budget alert
    assert [(a["threshold_percent"], a["scope"]) for a in alerts["data"]] == [(1, "key")]
    assert len(hook.events("acme")) == 1


async def test_a_refusal_fires_the_keys_own_threshold_too(make_gateway: Any) -> None:
    tiny = [{"scope": "key", "period": "day", "limit_usd": "0.0000001"}]  # less than any request
    async with make_gateway(config(budgets=tiny)) as gw:
        await gw.tenant("acme", "p")
        auth = {"Authorization": f"Bearer {await gw.key('acme', alert_threshold=33)}"}
        r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert r.status_code == 429 and r.json()["error"]["budget"]["scope"] == "key"
        for _ in range(50):  # the alerts are recorded behind the refusal
            alerts = (await gw.client.get("/admin/v1/budget-alerts", headers=gw.admin)).json()
            if len(alerts["data"]) == 4:
                break
            await asyncio.sleep(0)
        assert sorted(a["threshold_percent"] for a in alerts["data"]) == [33, 50, 80, 100]


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(st.sampled_from(["id", "name", "budgets", "rate_limits", "metadata",
                                             "x"]),
                            st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=80),
                                      st.lists(st.dictionaries(st.text(max_size=8),
                                                               st.text(max_size=8), max_size=3),
                                               max_size=3),
                                      st.dictionaries(st.text(max_size=8), st.integers(),
                                                      max_size=3)),
                            max_size=5))  # fmt: skip
def test_bad_workspace_bodies_are_4xx_never_500(tmp_path_factory: Any, body: Any) -> None:
    async def run() -> None:
        async with acme_gateway(tmp_path_factory.mktemp("ws")) as (c, admin):
            for method, path_ in (("POST", WS), ("PATCH", f"{WS}/default")):
                r = await c.request(method, path_, json=body, headers=admin)
                assert r.status_code < 500, (method, body, r.text)
            r = await c.post("/admin/v1/tenants/acme/keys", json=body, headers=admin)
            assert r.status_code < 500, (body, r.text)

    asyncio.run(run())


async def test_a_workspace_change_applies_to_the_next_request(make_gateway: Any) -> None:
    """The workspace's overrides are cached with the key, until the auth epoch moves: a
    change through the admin API applies at once, with no restart."""
    async with make_gateway(config()) as gw:
        await gw.tenant("acme", "p")
        roomy = [{"scope": "workspace", "period": "day", "limit_usd": "5"}]
        await gw.client.post(WS, json={"id": "a", "budgets": roomy}, headers=gw.admin)
        auth = {"Authorization": f"Bearer {await gw.key('acme', workspace='a')}"}
        assert (await gw.client.post("/v1/chat/completions", json=CHAT, headers=auth)).is_success
        tiny = [{"scope": "workspace", "period": "day", "limit_usd": "0.000001"}]
        r = await gw.client.patch(f"{WS}/a", json={"budgets": tiny}, headers=gw.admin)
        assert r.status_code == 200
        r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["budget"] == {"scope": "workspace", "period": "day", "name": "a"}


async def test_the_key_listing_pages(make_gateway: Any) -> None:
    """``GET /keys`` answers at most ``limit`` keys (default 100, at most 1000), oldest first;
    ``next_cursor`` walks every matching key exactly once, filters kept on every page."""
    async with make_gateway(config()) as gw:
        await setup(gw)
        await gw.tenant("globex", "p")
        c, admin = gw.client, gw.admin
        made = {"acme": [], "globex": []}
        for i in range(7):
            tenant = "acme" if i % 3 else "globex"
            body = {"metadata": {"n": i, "team": "red" if i % 2 else "blue"}}
            r = await c.post(f"/admin/v1/tenants/{tenant}/keys", json=body, headers=admin)
            made[tenant].append(r.json()["id"])

        async def walk(limit: int, **params: Any) -> tuple[list[str], int]:
            seen, pages, cursor = [], 0, None
            while True:
                query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
                r = await c.get("/admin/v1/keys", params=query, headers=admin)
                assert r.status_code == 200, r.text
                page = r.json()
                assert len(page["data"]) <= limit
                seen += [k["id"] for k in page["data"]]
                pages, cursor = pages + 1, page["next_cursor"]
                if cursor is None:
                    return seen, pages

        every, pages = await walk(2)
        assert sorted(every) == sorted(made["acme"] + made["globex"]) and pages == 4
        assert every == [
            k["id"] for k in (await c.get("/admin/v1/keys", headers=admin)).json()["data"]
        ]  # fmt: skip (the default page holds them all, in the same order)
        assert (await walk(3, tenant="acme"))[0] == made["acme"]
        reds, _ = await walk(1, tenant="acme", **{"metadata.team": "red"})
        assert reds == [made["acme"][0], made["acme"][3]]  # n = 1 and 5 (acme has 1, 2, 4, 5)
        r = await c.get("/admin/v1/keys", params={"limit": 2}, headers=admin)
        assert r.json()["next_cursor"] is not None
        for bad in ({"limit": 0}, {"limit": 1001}, {"cursor": "nonsense"},
                    {"cursor": "inf:key_x"}):  # fmt: skip
            r = await c.get("/admin/v1/keys", params=bad, headers=admin)
            assert r.status_code == 400, (bad, r.text)
        r = await c.get("/admin/v1/keys", params={"limit": 1000}, headers=admin)
        assert r.status_code == 200 and r.json()["next_cursor"] is None


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=st.dictionaries(st.one_of(st.sampled_from(["tenant", "workspace", "metadata.",
                                                         "metadata.team", "limit", "cursor"]),
                                        st.text(max_size=20).map(lambda s: "metadata." + s)),
                              st.text(max_size=1100), max_size=4))  # fmt: skip
def test_bad_key_listing_queries_are_4xx_never_500(tmp_path_factory: Any, params: Any) -> None:
    async def run() -> None:
        async with acme_gateway(tmp_path_factory.mktemp("keys")) as (c, admin):
            r = await c.get("/admin/v1/keys", params=params, headers=admin)
            assert r.status_code < 500, (params, r.text)
            assert r.status_code in (200, 400, 404), (params, r.text)

    asyncio.run(run())
