"""Issue [5], acceptance 4: the margin report of a scripted month equals a hand computation.

Every request is answered by a loopback OpenAI fake with a scripted usage of 1,000 input and
500 output tokens of gpt-4o-mini (USD 0.15 and 0.60 per 1M tokens): USD 0.00045 each.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fakes.openai_upstream import OpenAIUpstream, usage

NOV = datetime(2026, 11, 10, tzinfo=UTC).timestamp()
DEC = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
PLANS = {
    "starter": {"models": ["*"], "pricing": {"markup": "1.5", "monthly_fee_usd": "0.001"}},
    "payg": {"models": ["*"], "pricing": {"markup": "1.2"}},
    "enterprise": {"models": ["*"], "pricing": {"markup": "1.1", "monthly_fee_usd": "2000"}},
}


async def test_a_scripted_month_matches_the_hand_computation(make_gateway: Any) -> None:
    clock = {"now": NOV}
    async with OpenAIUpstream() as up:
        cfg = {
            "providers": {"oai": {"kind": "openai", "base_url": up.base_url,
                                  "api_key": "env:OAI_KEY"}},
            "models": {"mini": [{"provider": "oai", "model": "gpt-4o-mini"}]},
            "plans": PLANS,
        }  # fmt: skip
        async with make_gateway(cfg, env={"OAI_KEY": "sk-x"}, clock=lambda: clock["now"]) as gw:
            keys = {t: await gw.tenant_key(t, plan=p) for t, p in
                    (("acme", "starter"), ("beta", "payg"), ("corp", "enterprise"))}  # fmt: skip

            async def send(tenant: str) -> None:
                up.reply_chat("ok", usage=usage(1000, 500))
                r = await gw.client.post(
                    "/v1/chat/completions",
                    json={"model": "mini", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {keys[tenant]}"},
                )
                assert r.status_code == 200, r.text
                assert r.headers["x-farebox-cost-usd"] == "0.00045"

            for _ in range(4):
                await send("acme")
            for _ in range(2):
                await send("beta")
            clock["now"] = DEC  # December usage is not November's
            await send("acme")
            r = await gw.client.get("/admin/v1/margins?month=2026-11", headers=gw.admin)
            assert r.status_code == 200, r.text
            report = r.json()
    by_tenant = {row["tenant"]: row for row in report["data"]}
    # acme: fee 0.001; usage 4 x 0.00045 x 1.5 = 0.0027; cost 0.0018; margin 0.0019 of 0.0037
    assert by_tenant["acme"] == {
        "tenant": "acme", "plan": "starter", "requests": 4, "plan_fee_usd": "0.001",
        "usage_revenue_usd": "0.0027", "revenue_usd": "0.0037", "cost_usd": "0.0018",
        "margin_usd": "0.0019", "margin_percent": "51.35",
    }  # fmt: skip
    # beta: no fee; usage 2 x 0.00045 x 1.2 = 0.00108; cost 0.0009; margin 0.00018 (16.666..%)
    assert by_tenant["beta"]["revenue_usd"] == "0.00108"
    assert by_tenant["beta"]["margin_usd"] == "0.00018"
    assert by_tenant["beta"]["margin_percent"] == "16.67"
    # corp: the fee alone
    assert (by_tenant["corp"]["revenue_usd"], by_tenant["corp"]["cost_usd"]) == ("2000.00", "0.00")
    assert by_tenant["corp"]["margin_percent"] == "100.00"
    total = report["total"]
    assert total["revenue_usd"] == "2000.00478" and total["cost_usd"] == "0.0027"
    assert total["margin_usd"] == "2000.00208" and total["requests"] == 6


async def test_a_bad_month_is_a_400(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        r = await gw.client.get("/admin/v1/margins?month=November", headers=gw.admin)
        assert r.status_code == 400 and "2026-11" in r.json()["error"]["message"]
