"""Issue [14] acceptance 2: tenants from the subdomain (``auth.subdomain.base_domain``).

A service key on ``acme.api.example.com`` acts for acme; a tenant key (or a JWT) of globex on
acme's host is refused 403 ``tenant_host_mismatch``; ``X-Forwarded-Host`` is believed only
from a trusted proxy. The host -> tenant function is pure and checked on its own too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.identity.subdomain import host_tenant
from farebox.identity.tenancy import TENANT_ID
from tests.jwt_keys import AUDIENCE, ISSUER, Clock, JwksServer, ed_key, mint

BASE = "api.example.com"
CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("host", "tenant"),
    [
        ("acme.api.example.com", "acme"),
        ("ACME.Api.Example.COM", "acme"),
        ("acme.api.example.com:8443", "acme"),
        ("acme.api.example.com.", "acme"),
        ("team-7.api.example.com", "team-7"),
        ("api.example.com", None),
        ("a.b.api.example.com", None),
        ("acme.api.example.com.evil.test", None),
        ("acmeapi.example.com", None),
        ("acme.example.com", None),
        ("-acme.api.example.com", None),
        (".api.example.com", None),
        ("[::1]:8443", None),
        ("127.0.0.1:8787", None),
        ("", None),
        (None, None),
    ],
)
def test_host_names_a_tenant(host: str | None, tenant: str | None) -> None:
    assert host_tenant(host, BASE) == tenant


@given(st.text(max_size=80))
def test_a_named_tenant_is_always_a_valid_id_in_front_of_the_base(host: str) -> None:
    tenant = host_tenant(host, BASE)
    if tenant is not None:
        assert TENANT_ID.match(tenant)
        assert "." not in tenant
        assert host.strip().lower().startswith(f"{tenant}.{BASE}")


@asynccontextmanager
async def subdomain_gateway(make_gateway: Any, **server: Any) -> AsyncIterator[Any]:
    config = {"auth": {"subdomain": {"base_domain": "API.example.com"}}}
    if server:
        config["server"] = server
    async with make_gateway(config) as gw:
        await gw.tenant("acme")
        await gw.tenant("globex")
        yield gw


async def service_key(gw: Any) -> str:
    r = await gw.client.post("/admin/v1/service-keys", json={"name": "svc"}, headers=gw.admin)
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def on(host: str, key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Host": host, **extra}


async def test_a_service_key_on_a_tenant_host_acts_for_that_tenant(make_gateway: Any) -> None:
    async with subdomain_gateway(make_gateway) as gw:
        svc = await service_key(gw)
        r = await gw.client.post(CHAT, json=BODY, headers=on("acme.api.example.com", svc))
        assert r.status_code == 200, r.text
        me = await gw.client.get("/v1/me", headers=on("globex.api.example.com:443", svc))
        assert me.json()["tenant"]["id"] == "globex"
        assert [e.tenant_id for e in await gw.ledger()] == ["acme"]
        # the header agreeing with the host is fine; naming another tenant is refused
        same = on("acme.api.example.com", svc, **{"X-Farebox-Tenant": "acme"})
        assert (await gw.client.post(CHAT, json=BODY, headers=same)).status_code == 200
        other = on("acme.api.example.com", svc, **{"X-Farebox-Tenant": "globex"})
        r = await gw.client.post(CHAT, json=BODY, headers=other)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "tenant_host_mismatch")
        # off the tenant hosts a service key still needs the header
        r = await gw.client.post(CHAT, json=BODY, headers=on("api.example.com", svc))
        assert (r.status_code, r.json()["error"]["code"]) == (400, "missing_tenant")
        r = await gw.client.post(CHAT, json=BODY, headers=on("nobody.api.example.com", svc))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "tenant_not_found")


async def test_a_tenant_key_on_another_tenants_host_is_refused(make_gateway: Any) -> None:
    async with subdomain_gateway(make_gateway) as gw:
        globex = await gw.key("globex")
        r = await gw.client.post(CHAT, json=BODY, headers=on("acme.api.example.com", globex))
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "tenant_host_mismatch"
        for host in ("globex.api.example.com", "api.example.com", "gateway"):
            r = await gw.client.post(CHAT, json=BODY, headers=on(host, globex))
            assert r.status_code == 200, (host, r.text)
        assert len(await gw.ledger("globex")) == 3 and await gw.ledger("acme") == []


async def test_a_jwt_of_another_tenant_on_a_tenant_host_is_refused(make_gateway: Any) -> None:
    key, clock = ed_key(), Clock()
    async with JwksServer([key]) as jwks:
        jwt = {"jwks_url": jwks.url, "issuer": ISSUER, "audience": AUDIENCE}
        config = {"auth": {"jwt": jwt, "subdomain": {"base_domain": BASE}}}
        async with make_gateway(config, clock=clock) as gw:
            await gw.tenant("acme")
            token = mint(key, clock.now, tenant="acme")
            r = await gw.client.post(CHAT, json=BODY, headers=on("acme.api.example.com", token))
            assert r.status_code == 200, r.text
            r = await gw.client.post(CHAT, json=BODY, headers=on("globex.api.example.com", token))
            assert (r.status_code, r.json()["error"]["code"]) == (403, "tenant_host_mismatch")


def client_from(gw: Any, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=gw.app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_forwarded_host_is_believed_only_from_a_trusted_proxy(make_gateway: Any) -> None:
    async with subdomain_gateway(make_gateway, trusted_proxies=["10.0.0.0/8"]) as gw:
        svc, globex = await service_key(gw), await gw.key("globex")
        forwarded = {"X-Forwarded-Host": "acme.api.example.com"}
        async with client_from(gw, "10.1.2.3") as proxy, client_from(gw, "203.0.113.9") as stray:
            # through the proxy: the forwarded host names the tenant, and is checked
            r = await proxy.post(CHAT, json=BODY, headers=on("internal:8787", svc, **forwarded))
            assert r.status_code == 200, r.text
            r = await proxy.post(CHAT, json=BODY, headers=on("internal", globex, **forwarded))
            assert (r.status_code, r.json()["error"]["code"]) == (403, "tenant_host_mismatch")
            # the nearest proxy's value counts, not what the client put in front of it
            chained = {"X-Forwarded-Host": "acme.api.example.com, globex.api.example.com"}
            r = await proxy.post(CHAT, json=BODY, headers=on("internal", globex, **chained))
            assert r.status_code == 200, r.text
            # from anyone else the header is ignored: the Host header counts
            r = await stray.post(CHAT, json=BODY, headers=on("internal", svc, **forwarded))
            assert (r.status_code, r.json()["error"]["code"]) == (400, "missing_tenant")
            r = await stray.post(CHAT, json=BODY, headers=on("internal", globex, **forwarded))
            assert r.status_code == 200, r.text
        assert [e.tenant_id for e in await gw.ledger("acme")] == ["acme"]


async def test_without_auth_subdomain_the_host_means_nothing(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        globex = await gw.tenant_key("globex")
        r = await gw.client.post(CHAT, json=BODY, headers=on("acme.api.example.com", globex))
        assert r.status_code == 200, r.text
