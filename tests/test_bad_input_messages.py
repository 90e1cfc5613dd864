"""Bad input on ``/v1/messages`` and on the rate-limit admin inputs: a clean 4xx in the
caller's format, never a 500 or a traceback, and nothing billed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

PATH = "/v1/messages"
OK = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
TRACE_MARKERS = ("Traceback", 'File "', "farebox/", '.py"')


def body(**changes: Any) -> bytes:
    data = {**OK, **changes}
    return orjson.dumps({k: v for k, v in data.items() if v is not DROP})


DROP = object()
CASES: list[tuple[str, bytes, int]] = [
    ("not json", b"{nope", 400),
    ("array body", b"[1, 2]", 400),
    ("empty body", b"", 400),
    ("no model", body(model=DROP), 400),
    ("model not a string", body(model=7), 400),
    ("unknown model", body(model="no-such-model"), 404),
    ("no max_tokens", body(max_tokens=DROP), 400),
    ("max_tokens zero", body(max_tokens=0), 400),
    ("max_tokens a string", body(max_tokens="16"), 400),
    ("no messages", body(messages=DROP), 400),
    ("messages empty", body(messages=[]), 400),
    ("messages not a list", body(messages="hi"), 400),
    ("message not an object", body(messages=["hi"]), 400),
    ("system role in messages", body(messages=[{"role": "system", "content": "x"}]), 400),
    ("content a number", body(messages=[{"role": "user", "content": 5}]), 400),
    ("content blocks not objects", body(messages=[{"role": "user", "content": ["x"]}]), 400),
    ("system a number", body(system=5), 400),
    ("system blocks without text", body(system=[{"type": "text"}]), 400),
    ("stream not a boolean", body(stream="yes"), 400),
    ("tools not a list", body(tools={"name": "x"}), 400),
    ("temperature a string", body(temperature="hot"), 400),
    ("metadata a list", body(metadata=[1]), 400),
]


@pytest.mark.parametrize(("name", "raw", "status"), CASES, ids=[c[0] for c in CASES])
async def test_bad_messages_request_is_a_clean_anthropic_error(
    make_gateway: Any, name: str, raw: bytes, status: int
) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        headers = {"x-api-key": key, "content-type": "application/json"}
        r = await gw.client.post(PATH, content=raw, headers=headers)
        assert r.status_code == status, (name, r.text)
        data = r.json()
        assert data["type"] == "error" and data["error"]["message"], data
        assert not any(m in r.text for m in TRACE_MARKERS), r.text
        assert await gw.ledger("acme") == []


async def test_messages_without_a_key_is_an_anthropic_401(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        r = await gw.client.post(PATH, content=body())
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"


ADMIN_CASES: list[tuple[str, str, Any]] = [
    ("scope unknown", "tenant", [{"scope": "planet", "requests_per_minute": 1}]),
    ("negative limit", "tenant", [{"scope": "key", "requests_per_minute": -1}]),
    ("limit a string", "tenant", [{"scope": "key", "requests_per_minute": "ten"}]),
    ("unknown field", "tenant", [{"scope": "key", "rpm": 10}]),
    ("window too long", "tenant", [{"scope": "key", "requests_per_minute": 1, "window_s": 90000}]),
    ("not a list", "tenant", {"scope": "key"}),
    ("key override bad", "key", [{"scope": "ip", "concurrent": 1.5}]),
]


@pytest.mark.parametrize(("name", "target", "limits"), ADMIN_CASES, ids=[c[0] for c in ADMIN_CASES])
async def test_bad_rate_limit_overrides_are_400(
    make_gateway: Any, name: str, target: str, limits: Any
) -> None:
    async with make_gateway() as gw:
        await gw.tenant_key("acme")
        keys = (await gw.client.get("/admin/v1/tenants/acme/keys", headers=gw.admin)).json()
        url = (
            "/admin/v1/tenants/acme"
            if target == "tenant"
            else f"/admin/v1/keys/{keys['data'][0]['id']}"
        )
        r = await gw.client.patch(url, headers=gw.admin, json={"rate_limits": limits})
        assert r.status_code in (400, 422), (name, r.text)
        assert r.json()["error"]["message"]
        assert not any(m in r.text for m in TRACE_MARKERS)
        tenant = (await gw.client.get("/admin/v1/tenants/acme", headers=gw.admin)).json()
        assert tenant["rate_limits"] == []  # nothing half-applied


async def test_a_bad_routing_config_stops_start_up(tmp_path: Any) -> None:
    from farebox.config.settings import parse_settings
    from farebox.errors import ConfigError

    for bad, where in (
        ({"routing": {"retries": -1}}, "routing.retries"),
        ({"routing": {"breaker": {"failure_rate": 2}}}, "routing.breaker.failure_rate"),
        ({"plans": {"p": {"rate_limits": [{"scope": "moon"}]}}}, "plans.p.rate_limits.0.scope"),
        ({"plans": {"p": {"tools": {"deny": "x*"}}}}, "plans.p.tools.deny"),
        ({"providers": {"m": {"kind": "mock", "spike_rate": 3}}}, "providers.m.spike_rate"),
    ):
        with pytest.raises(ConfigError) as exc:
            parse_settings(bad, source="f.yaml", env={}, base_dir=tmp_path)
        assert where in exc.value.message, (where, exc.value.message)
