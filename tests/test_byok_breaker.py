"""A tenant's own key (BYOK) failing upstream does not feed the deployment's circuit breaker,
which every tenant shares (review of issue 14, finding 4), and its traffic does not fail over
onto the platform's key: only onto another deployment where the tenant has a key of its own,
else the client gets the provider's error.
"""

from __future__ import annotations

from typing import Any

from farebox.errors import UpstreamError
from farebox.providers.base import ChatRequest, ChatResult
from farebox.providers.mock import MockOptions, MockProvider

OWN_KEY = "sk-acme-exhausted-0123456789"
CHAT = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


class QuotaMock(MockProvider):
    """A mock that answers 429 insufficient_quota to one key, and counts who it served."""

    def __init__(self, name: str, refused: str) -> None:
        super().__init__(name, MockOptions(seed=1), api_key=f"sk-platform-{name}")
        self.refused = refused
        self.keys: list[str | None] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.keys.append(request.api_key)
        if request.api_key == self.refused:
            raise UpstreamError("429 insufficient_quota", upstream_status=429)
        return await super().chat(request)


def config(*providers: str) -> dict[str, Any]:
    return {
        "providers": {p: {"kind": "mock"} for p in providers},
        "models": {"m": [{"provider": p, "model": "gpt-4o-mini"} for p in providers]},
        "plans": {"default": {"models": ["*"]}},
        "routing": {"retries": 0, "breaker": {"failures": 2, "cooldown_s": 600}},
    }


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


async def own_key(gw: Any, tenant: str, provider: str) -> None:
    put = await gw.client.put(f"/admin/v1/tenants/{tenant}/integrations/{provider}",
                              json={"api_key": OWN_KEY}, headers=gw.admin)  # fmt: skip
    assert put.status_code == 200, put.text


async def breaker(gw: Any, deployment: str) -> dict[str, Any]:
    r = await gw.client.get("/admin/v1/deployments", headers=gw.admin)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = next(d for d in r.json()["data"] if d["deployment"] == deployment)
    return found


async def test_a_tenants_exhausted_own_key_leaves_the_deployment_to_every_other_tenant(
    make_gateway: Any,
) -> None:
    sim = QuotaMock("sim", OWN_KEY)
    async with make_gateway(config("sim"), providers={"sim": sim}) as gw:
        acme, beta = await gw.tenant_key("acme"), await gw.tenant_key("beta")
        await own_key(gw, "acme", "sim")
        for _ in range(12):  # six times the breaker's threshold
            r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(acme))
            assert r.status_code == 429, r.text  # the provider's answer to its own key
        assert sim.keys == [OWN_KEY] * 12
        shared = await breaker(gw, "sim/gpt-4o-mini")
        assert shared["state"] == "closed" and shared["failures"] == 0, shared
        for _ in range(3):
            r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(beta))
            assert r.status_code == 200, r.text  # the deployment is still everyone's
        assert sim.keys[12:] == [None] * 3  # the platform's (the provider's own) key


async def test_a_failed_own_key_fails_over_only_where_the_tenant_has_its_own_key(
    make_gateway: Any,
) -> None:
    sim, plat, alt = QuotaMock("sim", OWN_KEY), QuotaMock("plat", ""), QuotaMock("alt", "")
    providers = {"sim": sim, "plat": plat, "alt": alt}
    async with make_gateway(config("sim", "plat", "alt"), providers=providers) as gw:
        acme = await gw.tenant_key("acme")
        await own_key(gw, "acme", "sim")
        r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(acme))
        assert r.status_code == 429, r.text  # not onto the platform's keys of plat and alt
        assert sim.keys == [OWN_KEY] and plat.keys == [] and alt.keys == []
        await own_key(gw, "acme", "alt")  # a key of its own on another deployment: used
        r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(acme))
        assert r.status_code == 200, r.text
        assert plat.keys == [] and alt.keys == [OWN_KEY]
        entries = [e for e in await gw.ledger("acme") if e.status == "ok"]
        assert [e.byok for e in entries] == [True]
