"""A tenant_admin stays within its plan through workspaces and named budgets too (review of
issue 14, finding 2): a workspace's overrides replace the plan's of the same ident, and a
budget named for a user or a feature takes over the counter of the unnamed one, so both are
held to the plan's (and the tenant's, and the workspace's own) caps; an owner or an operator
still grants above them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
MOCK = {"kind": "mock", "seed": 1, "output_tokens": {"distribution": "fixed", "mean": 8}}
CONFIG: dict[str, Any] = {
    "providers": {"sim": MOCK},
    "default_plan": "free",
    "plans": {
        "free": {
            "models": ["*"],
            "rate_limits": [{"scope": "key", "requests_per_minute": 1}],
            "budgets": [{"scope": "user", "period": "month", "limit_usd": "0.00001"}],
        }
    },
}
WS = "/admin/v1/tenants/acme/workspaces"
BIG_LIMIT = [{"scope": "key", "requests_per_minute": 1000}]


class Admins:
    """The gateway's client with acme's tenant_admin, an operator and the owner."""

    def __init__(self, gw: Any) -> None:
        self.client: httpx.AsyncClient = gw.client
        self.keys = {"owner": ADMIN_KEY}

    async def seed(self) -> None:
        for role in ("tenant_admin", "operator"):
            body = {
                "name": role,
                "role": role,
                **({"tenant": "acme"} if role != "operator" else {}),
            }
            r = await self.call("owner", "POST", "/admin/v1/admin-keys", json=body)
            assert r.status_code == 201, r.text
            self.keys[role] = r.json()["key"]

    async def call(self, role: str, method: str, url: str, **kw: Any) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.keys[role]}"}
        return await self.client.request(method, url, headers=auth, **kw)


async def chats(client: httpx.AsyncClient, key: str, n: int, user: str | None = None) -> list[int]:
    headers = {"Authorization": f"Bearer {key}", **({"X-Farebox-User": user} if user else {})}
    return [
        (await client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code
        for _ in range(n)
    ]


def refused(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"


async def test_a_workspace_override_cannot_lift_the_plans_rate_limit(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        await gw.tenant("acme", "free")
        admins = Admins(gw)
        await admins.seed()
        r = await admins.call("tenant_admin", "POST", "/admin/v1/tenants/acme/keys", json={})
        key_id, secret = r.json()["id"], r.json()["key"]
        r = await admins.call("tenant_admin", "PATCH", f"/admin/v1/keys/{key_id}",
                              json={"rate_limits": BIG_LIMIT})  # fmt: skip
        assert refused(r), r.text
        r = await admins.call(
            "tenant_admin", "POST", WS, json={"id": "big", "rate_limits": BIG_LIMIT}
        )
        assert refused(r), r.text  # the reviewer's scenario: refused at creation
        r = await admins.call("tenant_admin", "POST", WS, json={"id": "big"})
        assert r.status_code == 201, r.text
        r = await admins.call("tenant_admin", "PATCH", f"{WS}/big", json={"rate_limits": BIG_LIMIT})
        assert refused(r), r.text  # and at a change
        r = await admins.call("tenant_admin", "PATCH", f"{WS}/default",
                              json={"rate_limits": BIG_LIMIT})  # fmt: skip
        assert refused(r), r.text  # the default workspace too
        r = await admins.call("tenant_admin", "PATCH", f"{WS}/big",
                              json={"rate_limits": [{"scope": "key"}]})  # fmt: skip
        assert refused(r), r.text  # a cap may not be removed
        r = await admins.call("tenant_admin", "PATCH", f"{WS}/big", json={"rate_limits": [
            {"scope": "key", "requests_per_minute": 1},
            {"scope": "workspace", "requests_per_minute": 5}]})  # fmt: skip
        assert r.status_code == 200, r.text  # within the plan, and a new ident: fine
        r = await admins.call("tenant_admin", "PATCH", f"/admin/v1/keys/{key_id}",
                              json={"workspace": "big"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert await chats(gw.client, secret, 3) == [200, 429, 429]  # the plan's 1 rpm holds
        for role, ws in (("operator", "ops"), ("owner", "own")):  # a grant above the plan
            r = await admins.call(role, "POST", WS, json={"id": ws, "rate_limits": BIG_LIMIT})
            assert r.status_code == 201, (role, r.text)
        r = await admins.call("operator", "PATCH", f"{WS}/big", json={"rate_limits": BIG_LIMIT})
        assert r.status_code == 200, r.text
        same = await admins.call("tenant_admin", "GET", f"{WS}/big")
        body = {"rate_limits": same.json()["rate_limits"], "name": "kept"}
        r = await admins.call("tenant_admin", "PATCH", f"{WS}/big", json=body)
        assert r.status_code == 200, r.text  # an operator's grant, sent back unchanged
        r = await admins.call("tenant_admin", "PATCH", f"{WS}/big", json={"rate_limits": [
            {"scope": "key", "requests_per_minute": 500}]})  # fmt: skip
        assert r.status_code == 200, r.text  # lower than the grant in force: fine


@pytest.mark.parametrize("scope", ["key", "user", "feature"])
async def test_a_workspace_budget_cannot_lift_the_plans(make_gateway: Any, scope: str) -> None:
    config = {**CONFIG, "plans": {"free": {"models": ["*"], "budgets": [
        {"scope": scope, "period": "month", "limit_usd": "0.5"}]}}}  # fmt: skip
    async with make_gateway(config) as gw:
        await gw.tenant("acme", "free")
        admins = Admins(gw)
        await admins.seed()
        big = [{"scope": scope, "period": "month", "limit_usd": "1000000"}]
        r = await admins.call("tenant_admin", "POST", WS, json={"id": "big", "budgets": big})
        assert refused(r), r.text
        if scope != "key":  # named for one user or feature: capped by the generic one too
            named = [{**big[0], "name": "alice"}]
            r = await admins.call("tenant_admin", "POST", WS, json={"id": "big", "budgets": named})
            assert refused(r), r.text
        small = [{"scope": scope, "period": "month", "limit_usd": "0.25"}]
        r = await admins.call("tenant_admin", "POST", WS, json={"id": "big", "budgets": small})
        assert r.status_code == 201, r.text
        r = await admins.call("tenant_admin", "PATCH", f"{WS}/big", json={"budgets": big})
        assert refused(r), r.text
        r = await admins.call("operator", "PATCH", f"{WS}/big", json={"budgets": big})
        assert r.status_code == 200, r.text


async def test_a_named_user_budget_cannot_lift_the_plans_generic_one(make_gateway: Any) -> None:
    budgets_only = {**CONFIG, "plans": {"free": {**CONFIG["plans"]["free"], "rate_limits": []}}}
    async with make_gateway(budgets_only) as gw:
        await gw.tenant("acme", "free")
        admins = Admins(gw)
        await admins.seed()
        secret = await gw.key("acme")
        assert await chats(gw.client, secret, 2, user="alice") == [200, 429]
        named = {"scope": "user", "period": "month", "name": "alice", "limit_usd": "1000"}
        r = await admins.call("tenant_admin", "PATCH", "/admin/v1/tenants/acme",
                              json={"budgets": [named]})  # fmt: skip
        assert refused(r), r.text  # the reviewer's scenario
        r = await admins.call("tenant_admin", "PATCH", "/admin/v1/tenants/acme",
                              json={"budgets": [{**named, "name": None}]})  # fmt: skip
        assert refused(r), r.text  # the unnamed one, as before
        key_id = (await admins.call("owner", "GET", "/admin/v1/tenants/acme/keys")).json()[
            "data"][0]["id"]  # fmt: skip
        r = await admins.call("tenant_admin", "PATCH", f"/admin/v1/keys/{key_id}",
                              json={"budgets": [named]})  # fmt: skip
        assert refused(r), r.text  # on a key too
        assert await chats(gw.client, secret, 2, user="alice") == [429, 429]
        lower = {**named, "limit_usd": "0.000005"}
        r = await admins.call("tenant_admin", "PATCH", "/admin/v1/tenants/acme",
                              json={"budgets": [lower]})  # fmt: skip
        assert r.status_code == 200, r.text  # narrower than the generic one: fine
        r = await admins.call("operator", "PATCH", "/admin/v1/tenants/acme",
                              json={"budgets": [named]})  # fmt: skip
        assert r.status_code == 200, r.text  # an operator grants it
        assert await chats(gw.client, secret, 2, user="alice") == [200, 200]
