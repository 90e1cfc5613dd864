"""Budgets through the HTTP API: the 429, clamping, downgrade, /v1/me and admin views."""

from __future__ import annotations

from typing import Any

from farebox.core.money import parse_usd

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


def config(limit: str = "0.001", tokens: int = 200, **plan: Any) -> dict[str, Any]:
    budgets = [{"period": "day", "limit_usd": limit}]
    mock = {"kind": "mock", "seed": 1, "output_tokens": {"distribution": "fixed", "mean": tokens}}
    return {
        "providers": {"sim": mock},
        "plans": {"p": {"models": ["*"], "budgets": budgets, **plan}},
        "upgrade_url": "https://example.test/upgrade",
    }


async def test_spend_stops_at_the_limit_with_a_contract_429(make_gateway: Any) -> None:
    async with make_gateway(config()) as gw:
        key = await gw.tenant_key("t", "p")
        auth = {"Authorization": f"Bearer {key}"}
        statuses = []
        for _ in range(40):
            r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=auth)
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[-1] == 429 and statuses.count(200) >= 2
        error = r.json()["error"]
        assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
        assert error["budget"] == {"scope": "tenant", "period": "day", "name": None}
        assert error["limit_usd"] == "0.001"
        assert parse_usd(error["used_usd"]) <= parse_usd("0.001")
        assert error["resets_at"].endswith("Z") and error["upgrade_url"].startswith("https://")
        assert int(r.headers["retry-after"]) >= 1
        spent = sum(e.cost for e in await gw.ledger("t"))
        assert spent <= parse_usd("0.001")
        me = (await gw.client.get("/v1/me", headers=auth)).json()
        [budget] = me["budgets"]
        assert parse_usd(budget["used_usd"]) == spent
        assert budget["reserved_usd"] == "0.00"
        assert parse_usd(budget["remaining_usd"]) == parse_usd("0.001") - spent
        admin = (await gw.client.get("/admin/v1/tenants/t/budgets", headers=gw.admin)).json()
        assert admin["data"][0]["used_usd"] == budget["used_usd"]


async def test_max_tokens_is_clamped_to_what_fits(make_gateway: Any) -> None:
    # gpt-4o-mini output is 0.60/1M: $0.00003 buys 50 output tokens, minus the input
    async with make_gateway(config("0.00003")) as gw:
        key = await gw.tenant_key("t", "p")
        r = await gw.client.post(
            "/v1/chat/completions",
            json={**CHAT, "max_tokens": 1000},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        [entry] = await gw.ledger("t")
        assert 16 <= entry.output_tokens < 50
        assert entry.cost <= parse_usd("0.00003")
        assert (
            parse_usd(r.headers["x-farebox-budget-remaining-usd"])
            == parse_usd("0.00003") - entry.cost
        )


async def test_downgrade_when_the_budget_runs_low(make_gateway: Any) -> None:
    cfg = config("0.01", tokens=50, downgrade={"gpt-4o": "gpt-4o-mini"})
    async with make_gateway(cfg) as gw:
        key = await gw.tenant_key("t", "p")
        auth = {"Authorization": f"Bearer {key}"}
        served = []
        for _ in range(30):
            r = await gw.client.post(
                "/v1/chat/completions", json={**CHAT, "model": "gpt-4o"}, headers=auth
            )
            if r.status_code != 200:
                break
            served.append(r.headers["x-farebox-model"])
        assert served[0] == "gpt-4o" and "gpt-4o-mini" in served
        assert sum(e.cost for e in await gw.ledger("t")) <= parse_usd("0.01")


async def test_tenant_override_and_temporary_increase(make_gateway: Any) -> None:
    async with make_gateway(config("0.001")) as gw:
        key = await gw.tenant_key("t", "p")
        r = await gw.client.patch(
            "/admin/v1/tenants/t",
            json={"budgets": [{"period": "day", "limit_usd": "5"}]},
            headers=gw.admin,
        )
        assert r.status_code == 200, r.text
        me = (await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})).json()
        assert me["budgets"][0]["limit_usd"] == "5.00"
        r = await gw.client.post(
            "/admin/v1/tenants/t/budget-increases",
            json={"period": "day", "amount_usd": "2.5", "expires_in_s": 3600},
            headers=gw.admin,
        )
        assert r.status_code == 200, r.text
        me = (await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})).json()
        assert me["budgets"][0]["limit_usd"] == "7.50"
        bad = await gw.client.patch(
            "/admin/v1/tenants/t",
            json={"budgets": [{"period": "fortnight", "limit_usd": "1"}]},
            headers=gw.admin,
        )
        assert bad.status_code == 400 and "fortnight" in bad.json()["error"]["message"]
