"""Issue [13]: prepaid credits through the admin API and the request path. A grant is made
once per idempotency key; requests burn their exact revenue x per_usd credits; a balance that
cannot cover a request's worst case is a 429 ``insufficient_credits`` with the balance and the
upgrade URL; grants burn first-to-expire first; bad grants are clear 4xx."""

from __future__ import annotations

import time
from typing import Any

import pytest

from farebox.core.money import PICO_PER_USD, format_usd
from tests.cache_gateway import CountingMock, ask, auth, config, post

PER_USD = 1000  # credits per USD: one credit is 10^9 pico-USD
UNIT = PICO_PER_USD // PER_USD
PLANS: dict[str, Any] = {
    "prepaid": {"models": ["*"], "pricing": {"markup": "2", "credits": {"per_usd": PER_USD}}},
    "cached_prepaid": {
        "models": ["*"],
        "cache": {"mode": "exact", "hit_price": "0.5"},
        "pricing": {"markup": "2", "credits": {"per_usd": PER_USD}},
    },
    "plain": {"models": ["*"]},
}
UPGRADE = "https://example.com/upgrade"


def credits_of(text: str) -> int:
    """A decimal credits string as pico-USD at the test plans' rate, exactly."""
    whole, _, frac = text.partition(".")
    scale = 10 ** len(frac)
    value = int(whole) * scale + (int(frac) if frac else 0)
    assert value * UNIT % scale == 0
    return value * UNIT // scale


async def grant(gw: Any, tenant: str, amount: str, key: str, **extra: Any) -> Any:
    body = {"amount": amount, "idempotency_key": key, **extra}
    return await gw.client.post(f"/admin/v1/tenants/{tenant}/credits", json=body, headers=gw.admin)


async def balance(gw: Any, tenant: str) -> dict[str, Any]:
    r = await gw.client.get(f"/admin/v1/tenants/{tenant}/credits", headers=gw.admin)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_a_grant_is_made_once_per_idempotency_key(make_gateway: Any) -> None:
    async with make_gateway(config(PLANS)) as gw:
        await gw.tenant("acme", "prepaid")
        first = await grant(gw, "acme", "1500", "order-1")
        assert first.status_code == 201, first.text
        again = await grant(gw, "acme", "1500", "order-1")
        assert again.status_code == 200
        assert again.json()["grants"] == first.json()["grants"]
        clash = await grant(gw, "acme", "1600", "order-1")
        assert clash.status_code == 409
        assert "order-1" in clash.json()["error"]["message"]
        view = await balance(gw, "acme")
        assert view["granted"] == "1500.00"
        assert view["balance"] == "1500.00"
        assert view["per_usd"] == "1000.00"
        assert len(view["grants"]) == 1


async def test_requests_burn_their_exact_revenue_in_credits(make_gateway: Any) -> None:
    async with make_gateway(config(PLANS)) as gw:
        key = await gw.tenant_key("acme", "prepaid")
        assert (await grant(gw, "acme", "5000", "g1")).status_code == 201
        for i in range(5):
            r = await post(gw, key, ask(f"question {i}", max_tokens=50))
            assert r.status_code == 200, r.text
        entries = await gw.ledger("acme")
        revenue = sum(e.revenue for e in entries)
        assert revenue > 0 and all(e.revenue == 2 * e.cost for e in entries)
        view = await balance(gw, "acme")
        assert credits_of(view["burned"]) == revenue
        assert credits_of(view["balance"]) + revenue == credits_of("5000")
        assert view["reserved"] == "0.00"


async def test_an_empty_balance_is_a_429_with_the_balance_and_upgrade_url(
    make_gateway: Any,
) -> None:
    async with make_gateway(config(PLANS, upgrade_url=UPGRADE)) as gw:
        key = await gw.tenant_key("acme", "prepaid")
        r = await post(gw, key, ask())
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["code"] == "insufficient_credits"
        assert error["balance"] == "0.00"
        assert error["upgrade_url"] == UPGRADE
        assert r.headers["x-should-retry"] == "false"
        assert await gw.ledger("acme") == []  # nothing was forwarded, nothing billed


async def test_a_small_balance_clamps_max_tokens_then_refuses(make_gateway: Any) -> None:
    async with make_gateway(config(PLANS)) as gw:
        key = await gw.tenant_key("acme", "prepaid")
        assert (await grant(gw, "acme", "0.05", "tiny")).status_code == 201
        spent = 0
        for i in range(200):
            r = await post(gw, key, ask(f"q{i}", max_tokens=4000))
            if r.status_code != 200:
                assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_credits"
                break
            spent += 1
        assert spent >= 1
        view = await balance(gw, "acme")
        burned = sum(e.revenue for e in await gw.ledger("acme"))
        assert credits_of(view["burned"]) == burned <= credits_of("0.05")
        assert credits_of(view["balance"]) == credits_of("0.05") - burned


async def test_grants_burn_first_to_expire_first(make_gateway: Any) -> None:
    now = [1_800_000_000.0]
    async with make_gateway(config(PLANS), clock=lambda: now[0]) as gw:
        key = await gw.tenant_key("acme", "prepaid")
        assert (await grant(gw, "acme", "100", "top", kind="top_up")).status_code == 201
        promo = await grant(gw, "acme", "100", "promo", kind="promo", expires_at=now[0] + 86400)
        assert promo.status_code == 201
        while True:
            r = await post(gw, key, ask(f"q{now[0]}", max_tokens=200))
            assert r.status_code == 200
            now[0] += 1
            burned = credits_of((await balance(gw, "acme"))["burned"])
            if burned > credits_of("1"):
                break
        grants = {g["idempotency_key"]: g for g in (await balance(gw, "acme"))["grants"]}
        assert credits_of(grants["promo"]["burned"]) == burned  # the promo expires first
        assert grants["top"]["burned"] == "0.00"
        now[0] += 2 * 86400  # the promo expires: what it had left is forfeited
        view = await balance(gw, "acme")
        assert credits_of(view["expired"]) == credits_of("100") - burned
        assert view["balance"] == "100.00"
        after = {g["idempotency_key"]: g for g in view["grants"]}
        assert after["promo"]["remaining"] == "0.00"
        assert (await post(gw, key, ask("after", max_tokens=200))).status_code == 200
        final = await balance(gw, "acme")
        top = next(g for g in final["grants"] if g["idempotency_key"] == "top")
        assert credits_of(top["burned"]) > 0
        total = credits_of(final["balance"]) + credits_of(final["burned"])
        assert total + credits_of(final["expired"]) == credits_of(final["granted"])


async def test_a_cache_hit_burns_its_hit_price(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", "cached_prepaid")
        assert (await grant(gw, "acme", "100", "g")).status_code == 201
        assert (await post(gw, key, ask("same"))).headers["x-farebox-cache"] == "miss"
        hit = await post(gw, key, ask("same"))
        assert hit.headers["x-farebox-cache"] == "hit-exact"
        miss, served = sorted(await gw.ledger("acme"), key=lambda e: e.started_at)
        assert served.revenue == (miss.revenue + 1) // 2 or served.revenue == miss.revenue // 2
        view = await balance(gw, "acme")
        assert credits_of(view["burned"]) == miss.revenue + served.revenue
        assert mock.chats == 1


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"amount": "0", "idempotency_key": "k"}, 400, "amount"),
        ({"amount": "-5", "idempotency_key": "k"}, 400, "amount"),
        ({"amount": "abc", "idempotency_key": "k"}, 400, "amount"),
        ({"amount": "1.0000000000001", "idempotency_key": "k"}, 400, "amount"),
        ({"amount": "5", "idempotency_key": "k", "expires_at": 1}, 400, "expires_at"),
        ({"amount": "5", "idempotency_key": "k", "expires_at": "soon"}, 400, "expires_at"),
        ({"amount": "5", "idempotency_key": "k", "kind": "gift"}, 400, None),
        ({"amount": "5"}, 400, None),
        ({"amount": 5, "idempotency_key": "k"}, 400, None),
    ],
)
async def test_bad_grants_are_a_clear_400(
    make_gateway: Any, body: dict[str, Any], status: int, param: str | None
) -> None:
    async with make_gateway(config(PLANS)) as gw:
        await gw.tenant("acme", "prepaid")
        r = await gw.client.post("/admin/v1/tenants/acme/credits", json=body, headers=gw.admin)
        assert r.status_code == status, r.text
        if param:
            assert r.json()["error"]["param"] == param
        assert (await balance(gw, "acme"))["granted"] == "0.00"


async def test_grants_need_a_known_prepaid_tenant(make_gateway: Any) -> None:
    async with make_gateway(config(PLANS)) as gw:
        await gw.tenant("plainco", "plain")
        assert (await grant(gw, "ghost", "5", "k")).status_code == 404
        r = await grant(gw, "plainco", "5", "k")
        assert r.status_code == 400 and "not prepaid" in r.json()["error"]["message"]
        key = await gw.key("plainco")
        ok = await gw.client.post("/v1/chat/completions", json=ask(), headers=auth(key))
        assert ok.status_code == 200  # a plan without credits is not limited by them


async def test_me_shows_a_prepaid_tenant_its_balance(make_gateway: Any) -> None:
    async with make_gateway(config(PLANS)) as gw:
        key = await gw.tenant_key("acme", "prepaid")
        assert (await grant(gw, "acme", "250", "g")).status_code == 201
        assert (await post(gw, key, ask("hello"))).status_code == 200
        me = (await gw.client.get("/v1/me", headers=auth(key))).json()
        view = await balance(gw, "acme")
        assert me["credits"] == {k: v for k, v in view.items() if k not in ("grants", "tenant")}
        assert credits_of(me["credits"]["burned"]) == sum(e.revenue for e in await gw.ledger())
        plain = await gw.tenant_key("plainco", "plain")
        assert "credits" not in (await gw.client.get("/v1/me", headers=auth(plain))).json()


async def test_a_revenue_budget_holds_what_the_tenant_is_charged(make_gateway: Any) -> None:
    plans = {"capped": {"models": ["*"], "pricing": {"markup": "3"}, "budgets": [
        {"period": "month", "limit_usd": "0.01", "basis": "revenue"}]}}  # fmt: skip
    async with make_gateway(config(plans)) as gw:
        key = await gw.tenant_key("acme", "capped")
        codes = [(await post(gw, key, ask(f"q{i}", max_tokens=300))).status_code for i in range(60)]
        assert 429 in codes and codes.index(429) > 0
        entries = await gw.ledger("acme")
        revenue = sum(e.revenue for e in entries)
        assert revenue <= 10**10  # USD 0.01 of revenue, never more
        assert sum(e.cost for e in entries) * 3 - revenue <= len(entries)  # markup 3, rounded
        r = await gw.client.get("/admin/v1/tenants/acme/budgets", headers=gw.admin)
        [budget] = r.json()["data"]
        assert budget["basis"] == "revenue" and budget["used_usd"] == format_usd(revenue)


async def test_a_prepaid_plan_with_a_budget_holds_both(make_gateway: Any) -> None:
    plans = {"both": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.002"}],
                      "pricing": {"markup": "2", "credits": {"per_usd": PER_USD}}}}  # fmt: skip
    async with make_gateway(config(plans)) as gw:
        key = await gw.tenant_key("acme", "both")
        assert (await grant(gw, "acme", "3", "g")).status_code == 201  # USD 0.003 of revenue
        codes = [(await post(gw, key, ask(f"q{i}", max_tokens=100))).status_code for i in range(40)]
        assert codes[0] == 200 and 429 in codes
        entries = await gw.ledger("acme")
        view = await balance(gw, "acme")
        assert credits_of(view["burned"]) == sum(e.revenue for e in entries) <= credits_of("3")
        assert sum(e.cost for e in entries) <= 2 * 10**9  # the cost budget held too
        r = await gw.client.get("/admin/v1/tenants/acme/budgets", headers=gw.admin)
        [budget] = r.json()["data"]
        assert budget["used_usd"] == format_usd(sum(e.cost for e in entries))
        assert budget["reserved_usd"] == "0.00" and view["reserved"] == "0.00"


async def test_a_refusal_then_a_top_up_is_an_upsell_conversion(make_gateway: Any) -> None:
    now = [1_793_836_800.0]  # 2026-11-05
    async with make_gateway(config(PLANS), clock=lambda: now[0]) as gw:
        key = await gw.tenant_key("acme", "prepaid")
        await gw.tenant_key("other", "prepaid")
        refused = await post(gw, key, ask())
        assert refused.json()["error"]["code"] == "insufficient_credits"
        await gw.app.state.upsell.drain()
        now[0] += 3 * 86400
        assert (await grant(gw, "acme", "100", "after-refusal")).status_code == 201
        month = time.strftime("%Y-%m", time.gmtime(now[0]))
        r = await gw.client.get(f"/admin/v1/upsell?month={month}", headers=gw.admin)
        assert r.status_code == 200, r.text
        total = r.json()["total"]
        assert (total["tenants_refused"], total["tenants_converted"]) == (1, 1)
        assert total["conversion_rate_percent"] == "100.00"
        [credits_line] = [g for g in r.json()["by_budget"] if g["kind"] == "insufficient_credits"]
        assert credits_line["converted_tenants"] == ["acme"]


async def test_a_cache_hit_counts_in_a_revenue_budget(make_gateway: Any) -> None:
    budget = {"period": "month", "limit_usd": "10", "basis": "revenue"}
    cache = {"mode": "exact", "hit_price": "0.5"}
    plans = {"capped": {"models": ["*"], "pricing": {"markup": "3"}, "cache": cache,
                        "budgets": [budget]}}  # fmt: skip
    async with make_gateway(config(plans)) as gw:
        key = await gw.tenant_key("acme", "capped")
        assert (await post(gw, key, ask("same"))).headers["x-farebox-cache"] == "miss"
        for _ in range(3):
            assert (await post(gw, key, ask("same"))).headers["x-farebox-cache"] == "hit-exact"
        entries = await gw.ledger("acme")
        assert sum(e.revenue for e in entries if e.status == "cache_hit") > 0
        r = await gw.client.get("/admin/v1/tenants/acme/budgets", headers=gw.admin)
        [budget] = r.json()["data"]
        assert budget["used_usd"] == format_usd(sum(e.revenue for e in entries))
        assert budget["reserved_usd"] == "0.00"


@pytest.mark.parametrize(
    "path",
    [
        "/admin/v1/tenants/acme/invoice?month=9999-12",
        "/admin/v1/upsell?month=9999-12",
        "/admin/v1/top-spenders?month=9999-12",
        "/admin/v1/margins?month=9999-12",
    ],
)
async def test_the_last_representable_month_is_a_400(make_gateway: Any, path: str) -> None:
    """Found by the review: 9999-12 ends in year 10000, which a date cannot say (a 500)."""
    async with make_gateway(config(PLANS)) as gw:
        await gw.tenant("acme", "prepaid")
        r = await gw.client.get(path, headers=gw.admin)
        assert r.status_code == 400, r.text
        reprice = {"month": "9999-12", "plan": "prepaid", "markup": "3"}
        r = await gw.client.post("/admin/v1/reprice", headers=gw.admin, json=reprice)
        assert r.status_code == 400, r.text


async def test_a_grant_beyond_what_every_store_keeps_exactly_is_a_400(make_gateway: Any) -> None:
    async with make_gateway(config(PLANS)) as gw:
        await gw.tenant("acme", "prepaid")
        r = await grant(gw, "acme", "9" * 30, "big")
        assert r.status_code == 400 and r.json()["error"]["param"] == "amount", r.text
        assert (await balance(gw, "acme"))["granted"] == "0.00"


async def test_a_cache_hit_refused_for_credits_is_an_upsell_moment(make_gateway: Any) -> None:
    now = [1_793_836_800.0]  # 2026-11-05
    plans = {"hits": {"models": ["*"], "cache": {"mode": "exact", "hit_price": "full"},
                      "pricing": {"markup": "2", "credits": {"per_usd": PER_USD}}}}  # fmt: skip
    async with make_gateway(config(plans), clock=lambda: now[0]) as gw:
        key = await gw.tenant_key("acme", "hits")
        assert (await grant(gw, "acme", "100", "g")).status_code == 201
        assert (await post(gw, key, ask("same"))).headers["x-farebox-cache"] == "miss"
        book = gw.app.state.services.budgets.credits
        await book.void("acme", "g", "test")  # what the grant had left is gone
        hit = await post(gw, key, ask("same"))
        assert hit.status_code == 429 and hit.json()["error"]["code"] == "insufficient_credits"
        await gw.app.state.upsell.drain()
        r = await gw.client.get("/admin/v1/upsell?month=2026-11", headers=gw.admin)
        [line] = [g for g in r.json()["by_budget"] if g["kind"] == "insufficient_credits"]
        assert (line["moments"], line["tenants_refused"]) == (1, 1)
