"""Shared fixtures: an in-process gateway driven through an ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.anthropic_upstream import AnthropicUpstream
from fakes.openai_upstream import OpenAIUpstream
from farebox.app import create_app
from farebox.config.settings import parse_settings
from farebox.providers.base import Provider
from tests.cluster_fixture import redis_cluster_nodes  # noqa: F401  (a session fixture)

ADMIN_KEY = "fba_test_admin_key_for_tests_only_0123456789"


@dataclass
class Gateway:
    """A running in-process gateway and helpers to drive it."""

    app: Any
    client: httpx.AsyncClient
    admin: dict[str, str]

    async def tenant(self, tenant_id: str, plan: str = "default", **extra: Any) -> dict[str, Any]:
        r = await self.client.post(
            "/admin/v1/tenants", json={"id": tenant_id, "plan": plan, **extra}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        return r.json()

    async def key(self, tenant_id: str, **extra: Any) -> str:
        r = await self.client.post(
            f"/admin/v1/tenants/{tenant_id}/keys", json={"name": "k", **extra}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    async def tenant_key(self, tenant_id: str, plan: str = "default") -> str:
        await self.tenant(tenant_id, plan)
        return await self.key(tenant_id)

    @property
    def store(self) -> Any:
        return self.app.state.services.store

    async def ledger(self, tenant_id: str | None = None) -> list[Any]:
        return list(await self.store.ledger(tenant_id))


GatewayFactory = Callable[..., Any]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Callable[..., Any]:
    """``async with make_gateway(config_dict, providers=...) as gw:``"""
    import contextlib

    @contextlib.asynccontextmanager
    async def factory(
        config: Mapping[str, Any] | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> AsyncIterator[Gateway]:
        data = {"database": f"sqlite:///{tmp_path / 'farebox.db'}", **(config or {})}
        environ = {"FAREBOX_ADMIN_KEY": ADMIN_KEY, **(env or {})}
        settings = parse_settings(data, source="test.yaml", env=environ, base_dir=tmp_path)
        kwargs: dict[str, Any] = {"providers": providers, "announce": lambda _m: None}
        if clock is not None:
            kwargs["clock"] = clock
        app = create_app(settings, **kwargs)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                yield Gateway(app, client, {"Authorization": f"Bearer {ADMIN_KEY}"})

    return factory


@pytest.fixture
async def ups() -> AsyncIterator[tuple[AnthropicUpstream, OpenAIUpstream]]:
    """An Anthropic and an OpenAI loopback fake, for a gateway with deployments of both."""
    async with AnthropicUpstream() as claude, OpenAIUpstream() as gpt:
        yield claude, gpt


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicUpstream]:
    """The fake Anthropic upstream, for a deployment of kind ``anthropic``."""
    async with AnthropicUpstream() as upstream:
        yield upstream
