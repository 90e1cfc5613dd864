"""Issue [14], acceptance 7: bring your own key.

A tenant that stored its own key for a provider has its traffic sent to that provider on that
key (the mock records the key it got); its ledger entries are ``byok`` with cost 0 to the
platform and revenue the plan's ``byok_fee``, exactly; the margins and the billing export
show them so; another tenant is unaffected. The fee's arithmetic is a property test.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fakes.billing import WebhookFake
from farebox.core.credentials import ByokFee
from farebox.core.meters import METERS, per_request, render
from farebox.core.money import format_usd, parse_usd, price_per_token
from farebox.core.plans import RevenueRule
from farebox.core.pricing import Price
from farebox.core.usage import Usage
from farebox.providers.mock import MockOptions, MockProvider
from farebox.sinks.events import event_key

SECRET = b"whsec-byok-test"
PLATFORM_KEY = "sk-platform-0123456789abcdef"
OWN_KEY = "sk-acme-own-fedcba9876543210"
FEE = {"per_request_usd": "0.002", "per_million_tokens_usd": "0.50"}
CHAT = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def config(hook: WebhookFake) -> dict[str, Any]:
    return {
        "providers": {"sim": {"kind": "mock", "api_key": "env:SIM_KEY"}},
        "plans": {"pro": {"models": ["*"], "pricing": {"markup": "1.5", "byok_fee": FEE}}},
        "default_plan": "pro",
        "billing": {"in_serve": False, "sinks": {"webhook": {
            "kind": "webhook", "base_url": hook.root_url + "/hooks/billing",
            "secret": "env:WEBHOOK_SECRET"}}},
    }  # fmt: skip


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


async def test_a_tenants_own_key_carries_its_traffic_and_is_billed_the_byok_fee(
    make_gateway: Any,
) -> None:
    mock = MockProvider("sim", MockOptions(seed=3), api_key=PLATFORM_KEY)
    env = {"SIM_KEY": PLATFORM_KEY, "WEBHOOK_SECRET": SECRET.decode()}
    async with WebhookFake(SECRET) as hook, make_gateway(
        config(hook), env=env, providers={"sim": mock}
    ) as gw:  # fmt: skip
        acme, beta = await gw.tenant_key("acme", "pro"), await gw.tenant_key("beta", "pro")
        put = await gw.client.put("/admin/v1/tenants/acme/integrations/sim",
                                  json={"api_key": OWN_KEY}, headers=gw.admin)  # fmt: skip
        assert put.status_code == 200, put.text
        assert put.json()["last4"] == OWN_KEY[-4:] and OWN_KEY not in put.text
        got = await gw.client.get("/admin/v1/tenants/acme/integrations/sim", headers=gw.admin)
        assert got.json()["owner"] == "acme" and OWN_KEY not in got.text
        for raw, key in ((acme, OWN_KEY), (beta, PLATFORM_KEY), (acme, OWN_KEY)):
            r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(raw))
            assert r.status_code == 200, r.text
            assert mock.last_api_key == key
        stream = {**CHAT, "stream": True}
        r = await gw.client.post("/v1/chat/completions", json=stream, headers=bearer(acme))
        assert r.status_code == 200 and mock.last_api_key == OWN_KEY
        entries = await gw.ledger()
        mine = [e for e in entries if e.tenant_id == "acme"]
        theirs = [e for e in entries if e.tenant_id == "beta"]
        assert len(mine) == 3 and len(theirs) == 1
        fee = ByokFee(parse_usd(FEE["per_request_usd"]),
                      price_per_token(FEE["per_million_tokens_usd"]))  # fmt: skip
        for e in mine:
            assert e.byok is True and e.cost == 0
            tokens = e.input_tokens + e.output_tokens
            assert e.revenue == fee.per_request + tokens * fee.per_token > 0
        (b,) = theirs
        assert b.byok is False and b.cost > 0 and b.revenue == b.cost * 3 // 2
        await margins_show_it(gw, sum(e.revenue for e in mine), b)
        await export_shows_it(gw, hook, entries)
        gone = await gw.client.delete("/admin/v1/tenants/acme/integrations/sim", headers=gw.admin)
        assert gone.status_code == 200
        r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(acme))
        assert r.status_code == 200 and mock.last_api_key == PLATFORM_KEY


async def margins_show_it(gw: Any, acme_revenue: int, beta: Any) -> None:
    month = time.strftime("%Y-%m", time.gmtime())
    r = await gw.client.get(f"/admin/v1/margins?month={month}", headers=gw.admin)
    assert r.status_code == 200, r.text
    lines = {line["tenant"]: line for line in r.json()["data"]}
    assert lines["acme"]["cost_usd"] == format_usd(0)
    assert lines["acme"]["usage_revenue_usd"] == format_usd(acme_revenue)
    assert lines["acme"]["margin_usd"] == format_usd(acme_revenue)
    assert lines["beta"]["cost_usd"] == format_usd(beta.cost)


async def export_shows_it(gw: Any, hook: WebhookFake, entries: list[Any]) -> None:
    exporter = gw.app.state.exporter
    exporter._sleep = lambda _s: asyncio.sleep(0)
    for _ in range(50):
        if not (await exporter.export_once("webhook")).entries:
            break
    held = {key: event["value"] for key, event in hook.accepted.items()}
    wanted = {event_key(r.tenant, r.unit, r.meter): render(r.meter, r.raw)
              for r in per_request(entries, METERS)}  # fmt: skip
    assert held == wanted
    for e in entries:
        cost_key = event_key(e.tenant_id, e.request_id, "cost_usd")
        revenue_key = event_key(e.tenant_id, e.request_id, "revenue_usd")
        assert held[revenue_key] == render("revenue_usd", e.revenue)
        assert (cost_key in held) is (not e.byok)  # a zero cost is no event
        # token meters count BYOK traffic too; its events say so, for a sink to filter on
        tokens = hook.accepted[event_key(e.tenant_id, e.request_id, "input_tokens")]
        assert tokens["properties"].get("byok") == ("true" if e.byok else None)


async def test_a_tenant_admin_path_for_an_unknown_tenant_or_provider_is_a_clear_4xx(
    make_gateway: Any,
) -> None:
    async with make_gateway({"providers": {"sim": {"kind": "mock"}}}) as gw:
        await gw.tenant("acme")
        body = {"api_key": OWN_KEY}
        r = await gw.client.put("/admin/v1/tenants/nobody/integrations/sim", json=body,
                                headers=gw.admin)  # fmt: skip
        assert r.status_code == 404
        r = await gw.client.put("/admin/v1/tenants/acme/integrations/nosuch", json=body,
                                headers=gw.admin)  # fmt: skip
        assert r.status_code == 400 and "sim" in r.json()["error"]["message"]
        r = await gw.client.get("/admin/v1/tenants/acme/integrations/sim", headers=gw.admin)
        assert r.status_code == 404


tokens = st.integers(0, 10**9)


@given(
    per_request_usd=st.decimals(0, 1000, places=6, allow_nan=False).map(str),
    per_million_usd=st.decimals(0, 1000, places=6, allow_nan=False).map(str),
    input_tokens=tokens,
    output_tokens=tokens,
    served=st.booleans(),
    markup=st.integers(1, 5),
)
def test_byok_revenue_is_the_fee_exactly_whatever_the_plan(
    per_request_usd: str, per_million_usd: str, input_tokens: int, output_tokens: int,
    served: bool, markup: int,
) -> None:  # fmt: skip
    fee = ByokFee(parse_usd(per_request_usd), price_per_token(per_million_usd))
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    resale = Price(input=7, output=9, cached_input=7, cache_write_5m=7, cache_write_1h=7)
    per_token = parse_usd(per_million_usd) // 1_000_000
    exact = (input_tokens + output_tokens) * per_token + (
        parse_usd(per_request_usd) if served else 0
    )
    for rule in (RevenueRule(markup_num=markup, byok=fee), RevenueRule(resale=resale, byok=fee)):
        assert rule.revenue(usage, 10**9, served=served, byok=True) == exact
        # what a revenue budget holds covers the fee too
        assert rule.worst(10**9, input_tokens, output_tokens) >= fee.worst(
            input_tokens + output_tokens
        )
    assert RevenueRule(markup_num=markup).revenue(usage, 10**9, byok=True) == 0


async def test_the_real_adapters_send_the_vault_key_in_their_own_header(
    make_gateway: Any, ups: Any
) -> None:
    """Over loopback: OpenAI's adapter sends the key as a bearer token, Anthropic's as
    ``x-api-key``; a tenant's own key replaces the configured one, never added beside it."""
    claude, gpt = ups
    config = {
        "providers": {
            "claude": {"kind": "anthropic", "base_url": claude.base_url,
                       "api_key": "integration:claude-prod"},
            "gpt": {"kind": "openai", "base_url": gpt.base_url, "api_key": "env:GPT_KEY"},
        },
        "models": {"claude": [{"provider": "claude", "model": "claude-sonnet-4-5"}],
                   "gpt": [{"provider": "gpt", "model": "gpt-4o-mini"}]},
    }  # fmt: skip
    async with make_gateway(config, env={"GPT_KEY": PLATFORM_KEY}) as gw:
        acme, beta = await gw.tenant_key("acme"), await gw.tenant_key("beta")
        vault = {"name": "claude-prod", "provider": "anthropic",
                 "api_key": "sk-ant-vault-0123456789"}  # fmt: skip
        made = await gw.client.post("/admin/v1/integrations", headers=gw.admin, json=vault)
        assert made.status_code == 201
        for tenant in ("acme", "beta"):
            own = {"api_key": f"sk-ant-{tenant}-own-0123"}
            await gw.client.put(f"/admin/v1/tenants/{tenant}/integrations/claude", json=own,
                                headers=gw.admin)  # fmt: skip
        await gw.client.put("/admin/v1/tenants/acme/integrations/gpt", json={"api_key": OWN_KEY},
                            headers=gw.admin)  # fmt: skip
        await gw.client.delete("/admin/v1/tenants/beta/integrations/claude", headers=gw.admin)

        async def ask(raw: str, model: str) -> None:
            body = {**CHAT, "model": model}
            r = await gw.client.post("/v1/chat/completions", json=body, headers=bearer(raw))
            assert r.status_code == 200, r.text

        await ask(acme, "gpt")
        assert gpt.last.headers.getall("authorization") == [f"Bearer {OWN_KEY}"]
        await ask(beta, "gpt")
        assert gpt.last.headers.getall("authorization") == [f"Bearer {PLATFORM_KEY}"]
        await ask(acme, "claude")
        assert claude.last.headers.getall("x-api-key") == ["sk-ant-acme-own-0123"]
        await ask(beta, "claude")
        assert claude.last.headers.getall("x-api-key") == ["sk-ant-vault-0123456789"]
        byok = {e.request_id: e.byok for e in await gw.ledger()}
        assert sorted(byok.values()) == [False, False, True, True]
        count = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
        for raw, key in ((beta, "sk-ant-vault-0123456789"), (acme, "sk-ant-acme-own-0123")):
            r = await gw.client.post("/v1/messages/count_tokens", json=count, headers=bearer(raw))
            assert r.status_code == 200 and r.headers["x-farebox-count-source"] == "provider"
            assert claude.last.path == "/v1/messages/count_tokens"
            assert claude.last.headers.getall("x-api-key") == [key]


async def test_budgets_count_no_cost_and_the_fee_as_revenue(make_gateway: Any) -> None:
    budgets = [{"period": "month", "limit_usd": "5"},
               {"period": "month", "limit_usd": "5", "basis": "revenue"}]  # fmt: skip
    config = {
        "providers": {"sim": {"kind": "mock"}},
        "plans": {
            "pro": {
                "models": ["*"],
                "budgets": budgets,
                "pricing": {"markup": "2", "byok_fee": FEE},
            }
        },  # fmt: skip
    }
    async with make_gateway(config) as gw:
        raw = await gw.tenant_key("acme", "pro")
        r = await gw.client.put("/admin/v1/tenants/acme/integrations/sim",
                                json={"api_key": OWN_KEY}, headers=gw.admin)  # fmt: skip
        assert r.status_code == 200
        for _ in range(3):
            r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(raw))
            assert r.status_code == 200, r.text
        entries = await gw.ledger("acme")
        assert all(e.byok and e.cost == 0 for e in entries) and len(entries) == 3
        r = await gw.client.get("/admin/v1/tenants/acme/budgets", headers=gw.admin)
        states = {s.get("basis", "cost"): s for s in r.json()["data"] if s["scope"] == "tenant"}
        assert states["cost"]["used_usd"] == format_usd(0)
        assert states["revenue"]["used_usd"] == format_usd(sum(e.revenue for e in entries))
        assert states["cost"]["reserved_usd"] == states["revenue"]["reserved_usd"] == format_usd(0)
