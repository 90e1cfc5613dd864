"""A base install (``pip install farebox``: no ``farebox[identity]`` extra, so neither
``cryptography`` nor PyJWT) starts and serves: the vault is built lazily (review of issue 14,
finding 3). Only a use of the vault needs the extra, and then the error names it: a provider
naming ``integration:...`` is a start-up error, the integrations admin routes and a request
whose key is a stored credential answer 501 ``vault_unavailable``.

Each check runs in a fresh interpreter with both packages blocked (``sys.modules[name] =
None`` before farebox is imported), so any import of them fails there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["cryptography"] = None  # a base install: no farebox[identity] extra
    sys.modules["jwt"] = None
    import asyncio, json, httpx
    import farebox.cli.root, farebox.cli.demo, farebox.cli.serve  # the CLI, farebox demo
    from farebox.app import create_app
    from farebox.config.settings import parse_settings
    from farebox.core.credentials import Credential
    from farebox.errors import ConfigError

    ADMIN = "fba_test_admin_key_for_tests_only_0123456789"
    CHAT = {"model": "gpt-4o-mini", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]}
    out = {}

    def settings(data, name):
        data = {"database": f"sqlite:///{sys.argv[1]}/{name}.db", **data}
        env = {"FAREBOX_ADMIN_KEY": ADMIN, "FAREBOX_SECRET": "s" * 64}
        return parse_settings(data, source="t.yaml", env=env, base_dir=sys.argv[1])

    async def serve(data, name, own_key=False):
        app = create_app(settings(data, name), announce=lambda _m: None)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with app.router.lifespan_context(app):
            t = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=t, base_url="http://gw") as c:
                r = await c.post("/admin/v1/tenants", json={"id": "acme", "plan": "default"},
                                 headers=admin)
                assert r.status_code == 201, r.text
                r = await c.post("/admin/v1/tenants/acme/keys", json={"name": "k"},
                                 headers=admin)
                key = {"Authorization": "Bearer " + r.json()["key"]}
                chat = await c.post("/v1/chat/completions", json=CHAT, headers=key)
                listed = await c.get("/admin/v1/integrations", headers=admin)
                own = await c.put("/admin/v1/tenants/acme/integrations/sim",
                                  json={"api_key": "sk-abcdef"}, headers=admin)
                byok = None
                if own_key:  # a tenant's own key stored (by an install that had the extra)
                    store = app.state.services.store
                    row = Credential("acme", "sim", "sim", b"x" * 32, b"n" * 12, "s1", "wxyz", 1.0)
                    await store.credentials.create_credential(row)
                    byok = await c.post("/v1/chat/completions", json=CHAT, headers=key)
        def seen(r):
            return None if r is None else [r.status_code, r.json().get("error", {})]
        return {"chat": seen(chat), "list": seen(listed), "own": seen(own), "byok": seen(byok)}

    base = {"providers": {"sim": {"kind": "mock"}}, "plans": {"default": {"models": ["*"]}}}
    out["base"] = asyncio.run(serve(base, "base", own_key=True))
    from farebox.demo.seed import DEMO_ANOMALY, DEMO_MODELS, DEMO_PLANS, DEMO_PROVIDERS
    demo = {"plans": {**DEMO_PLANS, "default": {"models": ["*"]}}, "default_plan": "free",
            "providers": DEMO_PROVIDERS, "models": DEMO_MODELS, "anomaly": DEMO_ANOMALY}
    out["demo"] = asyncio.run(serve(demo, "demo"))["chat"]
    named = {"providers": {"sim": {"kind": "mock", "api_key": "integration:sim-prod"}},
             "plans": {"default": {"models": ["*"]}}}
    try:
        create_app(settings(named, "named"), announce=lambda _m: None)
        out["named"] = "started"
    except ConfigError as exc:
        out["named"] = exc.message
    out["loaded"] = sorted(m for m in ("cryptography", "jwt") if sys.modules.get(m) is not None)
    print(json.dumps(out))
    """
)


def test_a_base_install_without_the_identity_extra_starts_serves_and_names_the_extra(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    out = json.loads(done.stdout.strip().splitlines()[-1])
    base = out["base"]
    assert base["chat"][0] == 200, base  # serves through the mock provider
    assert out["demo"][0] == 200, out  # the demo's providers and plans too
    for answer in (base["list"], base["own"], base["byok"]):
        status, error = answer
        assert status == 501 and error["code"] == "vault_unavailable", answer
        assert "farebox[identity]" in error["message"]
    # a provider naming an integration: a start-up error naming the field and the extra
    assert "providers.sim.api_key" in out["named"] and "farebox[identity]" in out["named"]
    assert out["loaded"] == []
