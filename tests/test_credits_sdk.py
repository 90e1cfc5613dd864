"""Issue [13], acceptance 3 (first half): a prepaid tenant as the official ``openai`` SDK and
the SaaS's webhook see it, against ``farebox serve``.

Every request costs exactly USD 0.10 (the model ``unit``: USD 0.01 per output token, 10
tokens); the plan charges cost (markup 1) at 1,000 credits per USD: 100 credits a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e import admin_headers, child_env, create_tenant_key, free_port, running, write_config
from tests.test_budget_sdk import (
    HOOK_SECRET,
    MESSAGES,
    UPGRADE_URL,
    Receiver,
    receiver,
    sdk,
    spend,
    verify,
)


def serve(tmp: Path, hook: Receiver) -> Any:
    mock = {"kind": "mock", "seed": 5, "output_tokens": {"distribution": "fixed", "mean": 10}}
    unit = {"provider": "sim", "model": "unit", "price": {"input": "0", "output": "10000"}}
    credits = {"per_usd": 1000, "low_balance": ["150"],
               "auto_top_up": {"below": "150", "amount": "1000"}}  # fmt: skip
    config = write_config(
        tmp, providers={"sim": mock}, models={"unit": [unit]},
        plans={"prepaid": {"models": ["*"], "pricing": {"markup": "1", "credits": credits}}},
        budgets={"alert_webhook_url": hook.url, "alert_webhook_secret": "env:HOOK_SECRET"},
        upgrade_url=UPGRADE_URL,
    )  # fmt: skip
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    return running(args, cwd=tmp, env=child_env(HOOK_SECRET=HOOK_SECRET), port=port)


async def test_the_sdk_sees_insufficient_credits_and_a_top_up_brings_it_back(
    tmp_path: Path,
) -> None:
    async with receiver() as hook:
        with serve(tmp_path, hook) as server:
            key = create_tenant_key(server.base_url, "t", "prepaid")
            async with (
                sdk(server, key) as client,
                httpx.AsyncClient(base_url=server.base_url, headers=admin_headers()) as admin,
            ):
                body = {"amount": "300", "idempotency_key": "first", "kind": "top_up"}
                assert (
                    await admin.post("/admin/v1/tenants/t/credits", json=body)
                ).status_code == 201
                await spend(client, 3)  # 300 credits: all of it
                with pytest.raises(openai.RateLimitError) as caught:
                    await client.chat.completions.create(
                        model="unit", messages=MESSAGES, max_tokens=10
                    )
                error = caught.value
                assert error.status_code == 429
                assert error.code == "insufficient_credits"
                assert isinstance(error.body, dict)
                assert error.body["balance"] == "0.00"
                assert error.body["required"] == "100.00"
                assert error.body["upgrade_url"] == UPGRADE_URL
                assert error.response.headers["x-should-retry"] == "false"

                events = await hook.wait_for("t", 2)  # below 150: the alert and the top-up ask
                for headers, raw in hook.received:
                    verify(headers, raw)
                low = next(e for e in events if e["type"] == "credits.low_balance")
                assert low["balance"] == "100.00" and low["threshold"] == "150.00"
                ask = next(e for e in events if e["type"] == "credits.auto_top_up")
                assert ask["amount"] == "1000.00"

                # the SaaS charges the card and grants what was asked, under the event's key
                top_up = {"amount": ask["amount"], "idempotency_key": ask["idempotency_key"]}
                for status in (201, 200):  # a redelivered event grants once
                    r = await admin.post("/admin/v1/tenants/t/credits", json=top_up)
                    assert r.status_code == status, r.text
                await spend(client, 1)
                view = (await admin.get("/admin/v1/tenants/t/credits")).json()
                assert view["balance"] == "900.00"
                assert view["burned"] == "400.00" and view["granted"] == "1300.00"
