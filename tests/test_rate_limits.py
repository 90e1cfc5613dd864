"""Rate limits and plan policy, in process (issue [3], acceptance 1, 3 and 5).

The clock is injected, so windows move only when a test moves them. Client IPs are the ASGI
peer address, set per client transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from farebox.app import create_app
from farebox.config.settings import load_settings
from farebox.core.tokens import estimate_messages
from tests.conftest import ADMIN_KEY

T0 = 1_800_000_000.0  # a whole second
MOCK = {"sim": {"kind": "mock", "seed": 3, "output_tokens": {"distribution": "fixed", "mean": 20}}}
MODELS = {"gpt-4o-mini": [{"provider": "sim", "model": "gpt-4o-mini"}],
          "gpt-4o": [{"provider": "sim", "model": "gpt-4o"}]}  # fmt: skip
PLANS: dict[str, Any] = {
    "free": {
        "models": ["gpt-4o-mini"],
        "rate_limits": [{"scope": "ip", "requests_per_minute": 10}],
        "max_input_chars": 2000,
        "max_input_tokens": 300,
        "tools": {"deny": ["database.delete*"], "require_approval": ["payments.*"]},
    },
    "enterprise": {"models": ["*"]},
    "metered": {"models": ["*"], "rate_limits": [{"scope": "key", "tokens_per_minute": 1000}]},
    "narrow": {"models": ["*"], "rate_limits": [{"scope": "tenant", "concurrent": 2}]},
}
CONFIG = {"providers": MOCK, "models": MODELS, "plans": PLANS}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def chat(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


@contextlib.asynccontextmanager
async def client_at(gw: Any, ip: str, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from socket peer ``ip``."""
    transport = httpx.ASGITransport(app=gw.app, client=(ip, 40_000))
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=headers
    ) as client:
        yield client


# --- acceptance 1: free plan, 10 requests per minute per IP ---------------------------------
async def test_eleventh_request_from_one_ip_is_refused_until_the_window_frees(
    make_gateway: Any,
) -> None:
    clock = Clock()
    async with make_gateway(CONFIG, clock=clock) as gw:
        key = await gw.tenant_key("f", plan="free")
        async with client_at(gw, "203.0.113.5", key) as a, client_at(gw, "198.51.100.9", key) as b:
            for i in range(10):
                r = await a.post("/v1/chat/completions", json=chat())
                assert r.status_code == 200, r.text
                assert r.headers["x-ratelimit-limit-requests"] == "10"
                assert r.headers["x-ratelimit-remaining-requests"] == str(9 - i)
            refused = await a.post("/v1/chat/completions", json=chat())
            assert refused.status_code == 429
            error = refused.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
            assert "10 requests per 60s for this ip" in error["message"]
            # all ten sit in the 3 s bucket of T0, which stops counting when the bucket 63 s
            # later begins (21 buckets cover any 60 s window): no 60 s can hold more than 10
            # begins: no window of 60 s can then hold more than 10
            assert refused.headers["retry-after"] == "63"
            assert refused.headers["retry-after-ms"] == "63000"
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
            # another IP of the same tenant has its own counter
            other = await b.post("/v1/chat/completions", json=chat())
            assert (
                other.status_code == 200 and other.headers["x-ratelimit-remaining-requests"] == "9"
            )
            # a client-made X-Forwarded-For from an untrusted peer changes nothing
            for spoof in ("198.51.100.77", "198.51.100.77, 10.0.0.1", "garbage"):
                r = await a.post(
                    "/v1/chat/completions", json=chat(), headers={"X-Forwarded-For": spoof}
                )
                assert r.status_code == 429, spoof
            clock.now = T0 + 62.5
            assert (await a.post("/v1/chat/completions", json=chat())).status_code == 429
            clock.now = T0 + 63.0
            r = await a.post("/v1/chat/completions", json=chat())
            assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "9"
        assert len(await gw.ledger("f")) == 12  # refusals are not billed


async def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(make_gateway: Any) -> None:
    config = {**CONFIG, "server": {"trusted_proxies": ["10.0.0.0/8"]}}
    async with make_gateway(config, clock=Clock()) as gw:
        key = await gw.tenant_key("f", plan="free")
        async with client_at(gw, "10.1.2.3", key) as proxy:
            for _ in range(10):
                r = await proxy.post(
                    "/v1/chat/completions", json=chat(), headers={"X-Forwarded-For": "192.0.2.1"}
                )
                assert r.status_code == 200
            # the same client, and a client-injected first entry, still count as 192.0.2.1
            for xff in ("192.0.2.1", "6.6.6.6, 192.0.2.1", "192.0.2.1, 10.9.9.9"):
                r = await proxy.post(
                    "/v1/chat/completions", json=chat(), headers={"X-Forwarded-For": xff}
                )
                assert r.status_code == 429, xff
            r = await proxy.post(
                "/v1/chat/completions", json=chat(), headers={"X-Forwarded-For": "192.0.2.2"}
            )
            assert r.status_code == 200
            me = await proxy.get("/v1/me", headers={"X-Forwarded-For": "192.0.2.2"})
            assert me.json()["client_ip"] == "192.0.2.2"


def test_a_bad_trusted_proxy_entry_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "farebox.yaml"
    path.write_text(yaml.safe_dump({"server": {"trusted_proxies": ["10.0.0.300/8"]}}))
    from farebox.errors import ConfigError

    with pytest.raises(ConfigError, match=r"10\.0\.0\.300/8"):
        create_app(load_settings(path, env={"FAREBOX_ADMIN_KEY": ADMIN_KEY}))


async def test_an_enterprise_tenant_bursts_a_thousand_requests_unthrottled(
    make_gateway: Any,
) -> None:
    async with make_gateway(CONFIG, clock=Clock()) as gw:
        key = await gw.tenant_key("e", plan="enterprise")
        async with client_at(gw, "203.0.113.5", key) as client:
            answers = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=chat()) for _ in range(1000))
            )
        assert [r.status_code for r in answers] == [200] * 1000
        assert all("x-ratelimit-limit-requests" not in r.headers for r in answers)
        assert len(await gw.ledger("e")) == 1000


# --- acceptance 3: tokens per minute, charged up front and corrected ------------------------
async def test_tokens_per_minute_hold_the_estimate_then_the_actual_usage(
    make_gateway: Any,
) -> None:
    clock = Clock()
    async with make_gateway(CONFIG, clock=clock) as gw:
        key = await gw.tenant_key("m", plan="metered")
        async with client_at(gw, "203.0.113.5", key) as client:
            body = chat("count me", max_tokens=700)
            estimate = estimate_messages(body["messages"]) + 700
            first = await client.post("/v1/chat/completions", json=body)
            assert first.status_code == 200
            # while in flight the request held its estimate
            assert first.headers["x-ratelimit-limit-tokens"] == "1000"
            assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - estimate)
            usage = first.json()["usage"]
            actual = usage["prompt_tokens"] + usage["completion_tokens"]
            assert actual < estimate
            # settled to the actual usage: a second request of the same estimate fits, which
            # it could not if the first one's estimate were still counted (2 * estimate > 1000)
            assert 2 * estimate > 1000
            second = await client.post("/v1/chat/completions", json=body)
            assert second.status_code == 200, second.text
            assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - actual - estimate)
            spent = actual + sum(
                second.json()["usage"][k] for k in ("prompt_tokens", "completion_tokens")
            )
            # a request whose estimate no longer fits is refused, with token headers
            too_big = chat("count me", max_tokens=1000 - spent)
            refused = await client.post("/v1/chat/completions", json=too_big)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert "tokens" in refused.json()["error"]["message"]
            assert int(refused.headers["retry-after"]) >= 1
            # a small one still fits
            small = await client.post("/v1/chat/completions", json=chat("hi", max_tokens=50))
            assert small.status_code == 200
            clock.now = T0 + 63
            again = await client.post("/v1/chat/completions", json=too_big)
            assert again.status_code == 200  # the window rolled on


async def test_concurrent_requests_are_limited_and_freed_when_they_finish(
    make_gateway: Any,
) -> None:
    slow = {"sim": {"kind": "mock", "seed": 1, "latency_ms": 300}}
    async with make_gateway({**CONFIG, "providers": slow}, clock=Clock()) as gw:
        key = await gw.tenant_key("n", plan="narrow")
        async with client_at(gw, "203.0.113.5", key) as client:
            answers = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=chat()) for _ in range(5))
            )
            codes = sorted(r.status_code for r in answers)
            assert codes == [200, 200, 429, 429, 429]
            refused = next(r for r in answers if r.status_code == 429)
            assert refused.headers["retry-after"] == "1"
            assert "2 concurrent requests for this tenant" in refused.json()["error"]["message"]
            # both slots were released on settlement
            again = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=chat()) for _ in range(2))
            )
            assert [r.status_code for r in again] == [200, 200]


# --- acceptance 5: policy errors --------------------------------------------------------------
async def test_each_policy_violation_gets_its_own_documented_error(make_gateway: Any) -> None:
    async with make_gateway(CONFIG, clock=Clock()) as gw:
        key = await gw.tenant_key("f", plan="free")
        async with client_at(gw, "203.0.113.5", key) as client:

            async def error(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                r = await client.post("/v1/chat/completions", json=body)
                return r.status_code, r.json()["error"]

            status, err = await error({**chat(), "model": "no-such-model"})
            assert (status, err["code"]) == (404, "model_not_found")
            status, err = await error({**chat(), "model": "gpt-4o"})
            assert (status, err["code"]) == (403, "model_not_allowed")
            assert err["allowed_models"] == ["gpt-4o-mini"]
            status, err = await error(chat("x" * 2100))
            assert (status, err["code"]) == (400, "input_too_large")
            assert "2000" in err["message"] and err["unit"] == "characters"
            status, err = await error(chat("word " * 300))  # ~1,500 chars, ~375 tokens
            assert (status, err["code"]) == (400, "input_too_large")
            assert "300" in err["message"] and err["unit"] == "tokens"

            def tool(name: str) -> dict[str, Any]:
                return {"type": "function", "function": {"name": name, "parameters": {}}}

            status, err = await error(chat(tools=[tool("search"), tool("database.delete_all")]))
            assert (status, err["code"]) == (403, "tool_denied")
            assert err["tool"] == "database.delete_all" and "database.delete*" in err["message"]
            status, err = await error(chat(tools=[tool("payments.refund")]))
            assert (status, err["code"]) == (403, "tool_requires_approval")
            assert err["tool"] == "payments.refund"
            assert err["type"] == "permission_error"
            ok = await client.post("/v1/chat/completions", json=chat(tools=[tool("search")]))
            assert ok.status_code == 200
        assert len(await gw.ledger("f")) == 1  # only the allowed request was forwarded


# --- visibility and changes at run time -------------------------------------------------------
async def test_limits_and_policy_are_visible_and_overridable_at_run_time(
    make_gateway: Any,
) -> None:
    async with make_gateway(CONFIG, clock=Clock()) as gw:
        key = await gw.tenant_key("f", plan="free")
        async with client_at(gw, "203.0.113.5", key) as client:
            me = (await client.get("/v1/me")).json()
            assert me["rate_limits"] == [{"scope": "ip", "requests_per_minute": 10, "window_s": 60}]
            assert me["policy"]["tools"]["deny"] == ["database.delete*"]
            assert me["policy"]["max_input_tokens"] == 300
            assert me["client_ip"] == "203.0.113.5"
            plans = (await gw.client.get("/admin/v1/plans", headers=gw.admin)).json()["data"]
            assert {p["name"] for p in plans} >= {"free", "enterprise", "metered", "narrow"}
            # a tenant override replaces the plan's limit of the same scope, at once
            r = await gw.client.patch(
                "/admin/v1/tenants/f",
                headers=gw.admin,
                json={"rate_limits": [{"scope": "ip", "requests_per_minute": 1}]},
            )
            assert r.status_code == 200 and r.json()["rate_limits"][0]["requests_per_minute"] == 1
            assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
            assert (await client.post("/v1/chat/completions", json=chat())).status_code == 429
            # a key override adds a tighter key-wide limit on top
            key_id = (await client.get("/v1/me")).json()["key"]["id"]
            r = await gw.client.patch(
                f"/admin/v1/keys/{key_id}",
                headers=gw.admin,
                json={"rate_limits": [{"scope": "key", "concurrent": 0}]},
            )
            assert r.status_code == 200
            async with client_at(gw, "198.51.100.1", key) as other:
                refused = await other.post("/v1/chat/completions", json=chat())
                assert refused.status_code == 429 and "concurrent" in refused.text
            limits = (await gw.client.get("/admin/v1/tenants/f/limits", headers=gw.admin)).json()
            assert limits["rate_limits"] == [
                {"scope": "ip", "requests_per_minute": 1, "window_s": 60}
            ]
            assert limits["keys"][0]["rate_limits"][-1] == {
                "scope": "key", "window_s": 60, "concurrent": 0,
            }  # fmt: skip
            bad = await gw.client.patch(
                "/admin/v1/tenants/f",
                headers=gw.admin,
                json={"rate_limits": [{"scope": "planet", "requests_per_minute": 1}]},
            )
            assert bad.status_code == 400 and "rate_limits[0]" in bad.json()["error"]["message"]


async def test_plans_change_when_the_config_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "farebox.yaml"
    data: dict[str, Any] = {"database": f"sqlite:///{tmp_path / 'f.db'}", **CONFIG}
    path.write_text(yaml.safe_dump(data))
    app = create_app(
        load_settings(path, env={"FAREBOX_ADMIN_KEY": ADMIN_KEY}), announce=lambda _m: None
    )
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.5", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            await client.post("/admin/v1/tenants", json={"id": "f", "plan": "free"}, headers=admin)
            r = await client.post("/admin/v1/tenants/f/keys", json={"name": "k"}, headers=admin)
            auth = {"Authorization": f"Bearer {r.json()['key']}"}
            gpt4o = {**chat(), "model": "gpt-4o"}
            r = await client.post("/v1/chat/completions", json=gpt4o, headers=auth)
            assert r.status_code == 403
            reloader = app.state.reloader
            assert not reloader.check()  # unchanged
            path.write_text("plans: [not, a, mapping")  # a broken edit keeps the old plans
            assert not reloader.check()
            data["plans"]["free"]["models"] = ["*"]
            data["plans"]["free"]["rate_limits"] = [{"scope": "ip", "requests_per_minute": 1}]
            path.write_text(yaml.safe_dump(data))
            assert reloader.check()
            r = await client.post("/v1/chat/completions", json=gpt4o, headers=auth)
            assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "1"
            r = await client.post("/v1/chat/completions", json=gpt4o, headers=auth)
            assert r.status_code == 429
