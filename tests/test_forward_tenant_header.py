"""Issue [14]: the caller's tenant, user and workspace sent upstream, for self-hosted model
servers behind the gateway (``providers.NAME.forward_{tenant,user,workspace}_header``).

Only a provider configured to sends them; none does by default. Checked on the wire against
loopback OpenAI and Anthropic fakes, and in the mock provider's record of what it received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fakes.anthropic_upstream import AnthropicUpstream
from fakes.openai_upstream import OpenAIUpstream
from farebox.app import make_provider
from farebox.config.settings import parse_settings
from farebox.http.client import HttpClient
from farebox.providers.mock import MockProvider
from tests.jwt_keys import AUDIENCE, ISSUER, Clock, JwksServer, ed_key, mint

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
FORWARD = {
    "forward_tenant_header": "X-Tenant-ID",
    "forward_user_header": "X-End-User",
    "forward_workspace_header": "X-Workspace",
}


def deployments(**providers: dict[str, Any]) -> dict[str, Any]:
    """``gpt-4o-mini`` served by the first provider given."""
    first = next(iter(providers))
    deployment = {"provider": first, "model": "gpt-4o-mini"}
    return {"providers": providers, "models": {"gpt-4o-mini": [deployment]}}


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


async def test_an_openai_upstream_sees_who_is_calling(make_gateway: Any) -> None:
    async with OpenAIUpstream() as up:
        config = deployments(local={"kind": "openai", "base_url": up.base_url, **FORWARD})
        async with make_gateway(config) as gw:
            key = await gw.tenant_key("acme")
            user = {"X-Farebox-User": "alice"}
            r = await gw.client.post(CHAT, json=BODY, headers=headers(key, **user))
            assert r.status_code == 200, r.text
            sent = up.last.headers
            assert (sent["X-Tenant-ID"], sent["X-End-User"]) == ("acme", "alice")
            assert sent["X-Workspace"] == "default"  # a key made with no workspace: default
            stream = {**BODY, "stream": True}
            r = await gw.client.post(CHAT, json=stream, headers=headers(key))
            assert r.status_code == 200, r.text
            assert up.last.headers["X-Tenant-ID"] == "acme"
            assert "X-End-User" not in up.last.headers  # no user named: none sent
            embed = {"model": "text-embedding-3-small", "input": "hi"}
            r = await gw.client.post("/v1/embeddings", json=embed, headers=headers(key))
            assert r.status_code == 200, r.text
            assert up.last.path == "/v1/embeddings" and up.last.headers["X-Tenant-ID"] == "acme"


async def test_nothing_is_forwarded_unless_configured(make_gateway: Any) -> None:
    async with OpenAIUpstream() as up:
        async with make_gateway(
            deployments(third={"kind": "openai", "base_url": up.base_url})
        ) as gw:
            key = await gw.tenant_key("acme")
            user = {"X-Farebox-User": "alice"}
            assert (await gw.client.post(CHAT, json=BODY, headers=headers(key, **user))).is_success
            sent = {name.lower() for name in up.last.headers}
            assert sent.isdisjoint({"x-tenant-id", "x-end-user", "x-workspace", "x-farebox-user"})
            assert "acme" not in " ".join(up.last.headers.values())


async def test_jwt_claims_are_forwarded_with_non_ascii_percent_encoded(make_gateway: Any) -> None:
    key, clock = ed_key(), Clock()
    async with JwksServer([key]) as jwks, AnthropicUpstream() as claude:
        jwt = {"jwks_url": jwks.url, "issuer": ISSUER, "audience": AUDIENCE,
               "user_claim": "email", "workspace_claim": "team"}  # fmt: skip
        config = {"auth": {"jwt": jwt}, "providers": {"claude": {"kind": "anthropic",
                  "base_url": claude.base_url, **FORWARD}},
                  "models": {"gpt-4o-mini": [{"provider": "claude",
                                              "model": "claude-haiku-4-5"}]}}  # fmt: skip
        async with make_gateway(config, clock=clock) as gw:
            await gw.tenant("acme")
            r = await gw.client.post("/admin/v1/tenants/acme/workspaces", json={"id": "research"},
                                     headers=gw.admin)  # fmt: skip
            assert r.status_code == 201, r.text
            evil = "research\r\nX-Evil: 1"  # names no workspace: refused before any upstream
            token = mint(key, clock.now, email="josé@acme.test", team=evil)
            r = await gw.client.post(CHAT, json=BODY, headers=headers(token))
            assert (r.status_code, r.json()["error"]["code"]) == (401, "token_unknown_workspace")
            assert claude.requests == []
            token = mint(key, clock.now, email="josé\r\nX-Evil: 1@acme.test", team="research")
            r = await gw.client.post(CHAT, json=BODY, headers=headers(token))
            assert r.status_code == 200, r.text
            sent = claude.last.headers
            assert sent["X-Tenant-ID"] == "acme"
            assert sent["X-End-User"] == "jos%C3%A9%0D%0AX-Evil: 1@acme.test"
            assert sent["X-Workspace"] == "research"
            assert "X-Evil" not in sent


def _mock(forward: dict[str, str]) -> MockProvider:
    data = {"database": "memory", "providers": {"sim": {"kind": "mock", **forward}}}
    settings = parse_settings(data, source="t.yaml", env={}, base_dir=Path("."))
    cfg = settings.file.providers["sim"]
    provider = make_provider("sim", cfg, settings, HttpClient(), frozenset())
    assert isinstance(provider, MockProvider)
    return provider


@pytest.mark.parametrize("configured", [True, False])
async def test_the_mock_provider_records_what_it_was_told(
    make_gateway: Any, configured: bool
) -> None:
    mock = _mock(FORWARD if configured else {})
    async with make_gateway(deployments(sim={"kind": "mock"}), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme")
        user = {"X-Farebox-User": "bob"}
        assert (await gw.client.post(CHAT, json=BODY, headers=headers(key, **user))).is_success
        stream = {**BODY, "stream": True}
        assert (await gw.client.post(CHAT, json=stream, headers=headers(key))).is_success
    if configured:
        ws = {"x-workspace": "default"}  # the key's workspace
        assert list(mock.received) == [{"x-tenant-id": "acme", "x-end-user": "bob", **ws},
                                       {"x-tenant-id": "acme", **ws}]  # fmt: skip
    else:
        assert list(mock.received) == []
