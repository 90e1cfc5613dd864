"""The world of the admin-role tests: a gateway on its own event loop (so hypothesis, which is
synchronous, can drive it too), two tenants with traffic (``acme`` and ``globex``), a key of
each, and an admin key of every role (the ``tenant_admin`` is acme's). ``call`` sends one
admin request as a role; ``ROUTES`` is the role table every admin operation must appear in."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from farebox.app import create_app
from farebox.config.settings import parse_settings

OWNER_KEY = "fba_roles_env_owner_key_0123456789abcdef"
A, B, MISSING = "acme", "globex", "nobody"
ROLES = ("owner", "operator", "billing", "viewer", "tenant_admin")
CALLERS = (*ROLES, "anonymous")
CONFIG: dict[str, Any] = {
    "providers": {"sim": {"kind": "mock", "seed": 3}},
    "dashboard": {"enabled": True, "session_check_cache_s": 0},
    "plans": {
        "default": {
            "models": ["*"],
            "budgets": [{"period": "month", "limit_usd": "50"}],
            "rate_limits": [{"scope": "key", "requests_per_minute": 600}],
        },
        "pro": {"models": ["*"], "pricing": {"monthly_fee_usd": "20"}},
        "prepaid": {"models": ["*"], "pricing": {"credits": {"per_usd": 1000}}},
    },
}

# (method, path) -> (need, tenant_ok): every admin operation, as the README's role table says.
# A new operation must be added here (the test fails until it is), with what it needs.
ROUTES: dict[tuple[str, str], tuple[str, bool]] = {
    ("POST", "/admin/v1/tenants"): ("operate", False),
    ("GET", "/admin/v1/tenants"): ("read", False),
    ("GET", "/admin/v1/tenants/{tenant_id}"): ("read", True),
    ("PATCH", "/admin/v1/tenants/{tenant_id}"): ("operate", True),
    ("GET", "/admin/v1/tenants/{tenant_id}/limits"): ("read", True),
    ("GET", "/admin/v1/deployments"): ("read", False),
    ("GET", "/admin/v1/metrics"): ("read", False),
    ("GET", "/admin/v1/export"): ("read", False),
    ("GET", "/admin/v1/dead-letters"): ("read", False),
    ("POST", "/admin/v1/dead-letters/retry"): ("billing", False),
    ("GET", "/admin/v1/margins"): ("read", False),
    ("GET", "/admin/v1/plan-profitability"): ("read", False),
    ("GET", "/admin/v1/reconciliation"): ("billing", False),
    ("GET", "/admin/v1/providers/{name}/reconcile"): ("billing", False),
    ("POST", "/admin/v1/reprice"): ("read", False),
    ("GET", "/admin/v1/upsell"): ("read", False),
    ("GET", "/admin/v1/plans"): ("read", False),
    ("POST", "/admin/v1/tenants/{tenant_id}/pause"): ("operate", False),
    ("POST", "/admin/v1/tenants/{tenant_id}/resume"): ("operate", False),
    ("GET", "/admin/v1/tenants/{tenant_id}/budgets"): ("read", True),
    ("POST", "/admin/v1/tenants/{tenant_id}/budget-increases"): ("operate", False),
    ("PATCH", "/admin/v1/keys/{key_id}"): ("operate", True),
    ("GET", "/admin/v1/budget-alerts"): ("read", True),
    ("GET", "/admin/v1/unsettled"): ("read", False),
    ("POST", "/admin/v1/tenants/{tenant_id}/keys"): ("operate", True),
    ("GET", "/admin/v1/tenants/{tenant_id}/keys"): ("read", True),
    ("POST", "/admin/v1/service-keys"): ("owner", False),
    ("DELETE", "/admin/v1/keys/{key_id}"): ("operate", True),
    ("POST", "/admin/v1/keys/{key_id}/pause"): ("operate", True),
    ("POST", "/admin/v1/keys/{key_id}/resume"): ("operate", False),
    ("GET", "/admin/v1/anomalies"): ("read", True),
    ("POST", "/admin/v1/anomalies/{incident_id}/resolve"): ("operate", False),
    ("GET", "/admin/v1/usage"): ("read", True),
    ("GET", "/admin/v1/series"): ("read", True),
    ("GET", "/admin/v1/top-spenders"): ("read", False),
    ("GET", "/admin/v1/requests"): ("read", True),
    ("GET", "/admin/v1/tenants/{tenant_id}/cache"): ("read", True),
    ("DELETE", "/admin/v1/tenants/{tenant_id}/cache"): ("operate", True),
    ("GET", "/admin/v1/cache"): ("read", False),
    ("POST", "/admin/v1/tenants/{tenant_id}/credits"): ("billing", False),
    ("GET", "/admin/v1/tenants/{tenant_id}/credits"): ("read", True),
    ("GET", "/admin/v1/tenants/{tenant_id}/invoice"): ("read", True),
    ("GET", "/admin/v1/credits/parked"): ("read", False),
    ("POST", "/admin/v1/credits/parked/{parked_id}/apply"): ("billing", False),
    ("POST", "/admin/v1/admin-keys"): ("owner", False),
    ("GET", "/admin/v1/admin-keys"): ("owner", False),
    ("DELETE", "/admin/v1/admin-keys/{key_id}"): ("owner", False),
    ("GET", "/admin/v1/audit"): ("owner", False),
    ("POST", "/admin/v1/integrations"): ("owner", False),
    ("GET", "/admin/v1/integrations"): ("owner", False),
    ("POST", "/admin/v1/integrations/rekey"): ("owner", False),
    ("POST", "/admin/v1/integrations/{name}/rotate"): ("owner", False),
    ("DELETE", "/admin/v1/integrations/{name}"): ("owner", False),
    ("PUT", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"): ("operate", True),
    ("GET", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"): ("operate", True),
    ("DELETE", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"): ("operate", True),
    ("POST", "/admin/v1/tenants/{tenant_id}/workspaces"): ("operate", True),
    ("GET", "/admin/v1/tenants/{tenant_id}/workspaces"): ("read", True),
    ("GET", "/admin/v1/tenants/{tenant_id}/workspaces/{workspace_id}"): ("read", True),
    ("PATCH", "/admin/v1/tenants/{tenant_id}/workspaces/{workspace_id}"): ("operate", True),
    ("DELETE", "/admin/v1/tenants/{tenant_id}/workspaces/{workspace_id}"): ("operate", True),
    ("GET", "/admin/v1/keys"): ("read", True),
    ("GET", "/admin/v1/guardrails/findings"): ("read", True),  # issue 15
}
GRANTS = {
    "owner": {"read", "operate", "billing", "owner"},
    "operator": {"read", "operate"},
    "billing": {"read", "billing"},
    "viewer": {"read"},
    "tenant_admin": {"read", "operate"},
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TENANT_QUERY = {"tenant", "tenant_id"}  # the query filters that name a tenant
_SERIAL = itertools.count()


def month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def serial() -> str:
    return f"{next(_SERIAL):05d}"


@dataclass
class World:
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    app: Any
    keys: dict[str, str] = field(default_factory=dict)  # caller -> its admin key
    tenant_keys: dict[str, str] = field(default_factory=dict)  # tenant -> a key's secret
    key_ids: dict[str, str] = field(default_factory=dict)  # tenant -> that key's id

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def headers(self, caller: str) -> dict[str, str]:
        key = self.keys.get(caller)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def call(self, caller: str, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.run(self.client.request(method, url, headers=self.headers(caller), **kw))

    def openapi(self) -> dict[str, Any]:
        r = self.call("owner", "GET", "/openapi.json")
        assert r.status_code == 200, r.text
        return dict(r.json())


def allowed(role: str, need: str, tenant_ok: bool) -> bool:
    """What the role table grants (the test's own statement of it)."""
    if role == "anonymous":
        return False
    if role == "tenant_admin" and not tenant_ok:
        return False
    return need in GRANTS[role]


def path_for(path: str, world: World, tenant: str) -> str:
    """The operation's path with its parameters: ``tenant``'s id and key."""
    values = {
        "{tenant_id}": tenant,
        "{key_id}": world.key_ids.get(tenant, "key_missing"),
        "{name}": "sim",
        "{incident_id}": "inc_missing",
        "{parked_id}": "parked_missing",
    }
    if path.startswith("/admin/v1/admin-keys/"):
        values["{key_id}"] = "adk_missing"
    for name, value in values.items():
        path = path.replace(name, value)
    return path


def query_for(path: str, params: set[str], tenant: str | None) -> dict[str, str]:
    """Values good enough to get past input checks; ``tenant``: the tenant filter's value."""
    out: dict[str, str] = {}
    if "month" in params:
        out["month"] = month()
    if path.endswith(("/series", "/top-spenders")):
        now = int(time.time())
        out.update(start=str(now - 86_400), end=str(now + 3_600))
    for name in params & TENANT_QUERY:
        if tenant is not None:
            out[name] = tenant
    return out


def body_for(method: str, path: str) -> dict[str, Any] | None:
    """A body each writing operation accepts (a fresh id where one must be new)."""
    bodies: dict[str, dict[str, Any]] = {
        "/admin/v1/tenants": {"id": f"made-{serial()}", "plan": "default"},
        "/admin/v1/tenants/{tenant_id}": {"name": "renamed"},
        "/admin/v1/tenants/{tenant_id}/budget-increases": {"amount_usd": "1"},
        "/admin/v1/keys/{key_id}": {"rate_limits": [{"scope": "key", "requests_per_minute": 60}]},
        "/admin/v1/tenants/{tenant_id}/keys": {"name": "made"},
        "/admin/v1/service-keys": {"name": "svc"},
        "/admin/v1/dead-letters/retry": {"sink": "none"},
        "/admin/v1/reprice": {"month": month(), "plan": "default", "markup": "1.2"},
        "/admin/v1/tenants/{tenant_id}/credits": {"amount": "10", "idempotency_key": serial()},
        "/admin/v1/admin-keys": {"name": "made", "role": "viewer"},
    }
    if method in ("GET", "DELETE"):
        return None
    return bodies.get(path)


@asynccontextmanager
async def _gateway(directory: Path) -> Any:
    data = {"database": f"sqlite:///{directory / 'farebox.db'}", **CONFIG}
    env = {"FAREBOX_ADMIN_KEY": OWNER_KEY}
    settings = parse_settings(data, source="roles.yaml", env=env, base_dir=directory)
    app = create_app(settings, announce=lambda _m: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app, client


async def _seed(world: World) -> None:
    owner = {"Authorization": f"Bearer {OWNER_KEY}"}
    client = world.client
    for tenant in (A, B):
        r = await client.post("/admin/v1/tenants", json={"id": tenant}, headers=owner)
        assert r.status_code == 201, r.text
        r = await client.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k"},
                              headers=owner)  # fmt: skip
        assert r.status_code == 201, r.text
        world.tenant_keys[tenant], world.key_ids[tenant] = r.json()["key"], r.json()["id"]
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        auth = {"Authorization": f"Bearer {world.tenant_keys[tenant]}",
                "X-Farebox-User": f"user-of-{tenant}"}  # fmt: skip
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=chat, headers=auth)
            assert r.status_code == 200, r.text
    world.keys["owner"] = OWNER_KEY
    for role in ROLES[1:]:
        body = {"name": role, "role": role, **({"tenant": A} if role == "tenant_admin" else {})}
        r = await client.post("/admin/v1/admin-keys", json=body, headers=owner)
        assert r.status_code == 201, r.text
        world.keys[role] = r.json()["key"]


def make_world(directory: Path) -> Iterator[World]:
    """The body of a module fixture: the world, torn down after."""
    loop = asyncio.new_event_loop()
    manager = _gateway(directory)
    app, client = loop.run_until_complete(manager.__aenter__())
    world = World(loop, client, app)
    loop.run_until_complete(_seed(world))
    try:
        yield world
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


# the dashboard as a role: a session cookie, a page or form post with it, its CSRF token
def cookie_of(world: World, caller: str) -> str | None:
    if caller == "anonymous":
        return None
    r = world.run(world.client.post("/dashboard/signin", data={"key": world.keys[caller]},
                                    headers=FORM))  # fmt: skip
    assert r.status_code == 303, (caller, r.text)
    found = re.search(r"farebox_dashboard=([^;]+)", r.headers["set-cookie"])
    assert found
    return found.group(1)


def dash(world: World, method: str, path: str, cookie: str | None, **form: str) -> Any:
    world.client.cookies.clear()
    headers = {**FORM, **({"Cookie": f"farebox_dashboard={cookie}"} if cookie else {})}
    return world.run(world.client.request(method, path, headers=headers, data=form or None))


def csrf_of(world: World, cookie: str) -> str:
    page = dash(world, "GET", "/dashboard", cookie)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)
