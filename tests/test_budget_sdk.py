"""Acceptance: budgets as a client and an operator see them, against ``farebox serve``.

The official ``openai`` SDK gets a ``RateLimitError`` with the contract's budget fields once
a budget is spent, and threshold alerts reach a signed webhook (a loopback ``aiohttp``
receiver) once per crossed threshold, and are listed by ``GET /admin/v1/budget-alerts``.

Every request costs exactly USD 0.10: the model ``unit`` is priced at USD 0.01 per output
token and nothing for input, and the mock always answers with 10 tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiohttp import web

from farebox.core.money import parse_usd
from tests.e2e import (
    ServerProcess,
    admin_headers,
    child_env,
    create_tenant_key,
    db_path,
    free_port,
    ledger_rows,
    running,
    write_config,
)

HOOK_SECRET = "whsec_budget_alerts_test_secret_0123456789"
UPGRADE_URL = "https://billing.example.test/upgrade"
COST = parse_usd("0.10")
MESSAGES: Any = [{"role": "user", "content": "spend"}]
DELIVERY_TIMEOUT_S = 10.0


@dataclass
class Receiver:
    """A loopback webhook endpoint that keeps what it was sent."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def events(self, tenant: str) -> list[dict[str, Any]]:
        out = []
        for _, body in self.received:
            event = orjson.loads(body)
            if event.get("tenant") == tenant:
                out.append(event)
        return out

    async def wait_for(self, tenant: str, count: int) -> list[dict[str, Any]]:
        """Poll until ``count`` events for ``tenant`` arrived; fail at the deadline."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while len(self.events(tenant)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} alert(s) for {tenant}, got {self.events(tenant)}"
                )
            await asyncio.sleep(0.05)  # polling interval, the deadline bounds the wait
        return self.events(tenant)


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    hook = Receiver(f"http://127.0.0.1:{port}/hook")

    async def handle(request: web.Request) -> web.Response:
        hook.received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield hook
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def gateway(tmp: Path, hook: Receiver | None = None) -> Iterator[ServerProcess]:
    mock = {"kind": "mock", "seed": 5, "output_tokens": {"distribution": "fixed", "mean": 10}}
    unit = {"provider": "sim", "model": "unit", "price": {"input": "0", "output": "10000"}}
    budgets: dict[str, Any] = {"alert_thresholds": [50, 80, 100]}
    if hook is not None:
        budgets["alert_webhook_url"] = hook.url
        budgets["alert_webhook_secret"] = "env:HOOK_SECRET"
    config = write_config(
        tmp,
        providers={"sim": mock},
        models={"unit": [unit]},
        plans={
            "tiny": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.30"}]},
            "p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "1.00"}]},
        },
        budgets=budgets,
        upgrade_url=UPGRADE_URL,
    )
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with running(args, cwd=tmp, env=child_env(HOOK_SECRET=HOOK_SECRET), port=port) as server:
        yield server


def sdk(server: ServerProcess, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=20.0
    )


async def spend(client: openai.AsyncOpenAI, requests: int) -> None:
    for _ in range(requests):
        raw = await client.chat.completions.with_raw_response.create(
            model="unit", messages=MESSAGES, max_tokens=10
        )
        assert parse_usd(raw.headers["x-farebox-cost-usd"]) == COST
        completion = raw.parse()
        assert completion.usage is not None and completion.usage.completion_tokens == 10


def verify(headers: dict[str, str], body: bytes) -> None:
    signature = {k.lower(): v for k, v in headers.items()}["x-farebox-signature"]
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", signature)
    assert match, signature
    stamp, mac = match.groups()
    assert abs(int(stamp) - time.time()) < 300
    expected = hmac.new(HOOK_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(mac, expected.hexdigest()), "signature does not verify"


async def test_sdk_raises_rate_limit_error_with_the_budget_fields(tmp_path: Path) -> None:
    with gateway(tmp_path) as server:
        key = create_tenant_key(server.base_url, "tiny", "tiny")
        async with sdk(server, key) as client:
            await spend(client, 3)
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(model="unit", messages=MESSAGES, max_tokens=10)
    error = caught.value
    assert error.status_code == 429
    assert error.code == "budget_exceeded"
    assert error.type == "insufficient_quota"
    body = error.body
    assert isinstance(body, dict)
    assert body["budget"] == {"scope": "tenant", "period": "day", "name": None}
    assert body["used_usd"] == "0.30" and body["limit_usd"] == "0.30"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", body["resets_at"]), body["resets_at"]
    assert body["upgrade_url"] == UPGRADE_URL
    retry_after = int(error.response.headers["retry-after"])
    assert 1 <= retry_after <= 86_400
    assert error.response.headers["x-farebox-request-id"]
    rows = ledger_rows(db_path(tmp_path), "tenant_id = ?", ("tiny",))
    assert len(rows) == 3 and sum(r["cost"] for r in rows) == 3 * COST


async def test_threshold_alerts_are_signed_and_sent_once_each(tmp_path: Path) -> None:
    async with receiver() as hook:
        with gateway(tmp_path, hook) as server:
            key = create_tenant_key(server.base_url, "t", "p")
            async with (
                sdk(server, key) as client,
                httpx.AsyncClient(base_url=server.base_url, headers=admin_headers()) as admin,
            ):
                await spend(client, 9)  # USD 0.90 of 1.00: past 50 % and 80 %
                events = await hook.wait_for("t", 2)
                assert [e["threshold_percent"] for e in events] == [50, 80]

                await spend(client, 1)  # USD 1.00: exhausted
                with pytest.raises(openai.RateLimitError):
                    await client.chat.completions.create(
                        model="unit", messages=MESSAGES, max_tokens=10
                    )
                events = await hook.wait_for("t", 3)
                assert [e["threshold_percent"] for e in events] == [50, 80, 100]

                # more refusals do not repeat an alert
                for _ in range(3):
                    with pytest.raises(openai.RateLimitError):
                        await client.chat.completions.create(
                            model="unit", messages=MESSAGES, max_tokens=10
                        )
                r = await admin.get("/admin/v1/budget-alerts", params={"tenant": "t"})
                assert r.status_code == 200, r.text
                listed = r.json()["data"]

    events = hook.events("t")
    assert [e["threshold_percent"] for e in events] == [50, 80, 100]
    for event in events:
        assert event["type"] == "budget.threshold"
        assert event["budget"] == "tenant:t:day"
        assert event["scope"] == "tenant" and event["period"] == "day"
        assert event["limit_usd"] == "1.00"
        used = parse_usd(event["used_usd"])
        assert used * 100 >= parse_usd("1.00") * event["threshold_percent"]
    for headers, body in hook.received:
        verify(headers, body)
    assert sorted(a["threshold_percent"] for a in listed) == [50, 80, 100]
    assert {a["budget"] for a in listed} == {"tenant:t:day"}
    assert {a["tenant"] for a in listed} == {"t"}


async def test_alert_fires_when_spend_crosses_a_threshold(tmp_path: Path) -> None:
    """The request that takes spend across 50 % raises the alert; no later one is needed."""
    async with receiver() as hook:
        with gateway(tmp_path, hook) as server:
            key = create_tenant_key(server.base_url, "t", "p")
            async with sdk(server, key) as client:
                await spend(client, 5)  # USD 0.50 of 1.00, then the tenant goes quiet
                events = await hook.wait_for("t", 1)
    assert [e["threshold_percent"] for e in events] == [50]
    assert events[0]["used_usd"] == "0.50"
