"""Python function calls per request through the whole app, in process: a deterministic cost
proxy to compare two commits where wall-clock runs are too noisy.

    PYTHONPATH=src .venv/bin/python -m bench.calls [--requests 400] [--stream]

It drives requests through ``create_app`` (SQLite single-process store, the built-in mock
provider with no latency, two budgets and a key rate limit) over httpx's ASGI transport, under
cProfile, and prints the calls per request (the client's included, the same on both sides).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
from pathlib import Path
from typing import Any

import httpx

from farebox.app import create_app

try:  # the layout since the restructure into wings
    from farebox.config.settings import load_settings
except ImportError:  # an older commit, for comparison
    from farebox.config import load_settings  # type: ignore[no-redef]

ADMIN_KEY = "fba_admin_key_for_counting_calls_0123456789"
CONFIG = """database: "sqlite:///{db}"
server: {{single_process: true}}
providers:
  sim: {{kind: mock, seed: 7, latency_ms: 0}}
plans:
  starter:
    models: ["*"]
    budgets:
      - {{period: day, limit_usd: "500"}}
      - {{period: month, limit_usd: "10000"}}
    rate_limits:
      - {{scope: key, requests_per_minute: 100000, tokens_per_minute: 100000000}}
default_plan: starter
"""


async def count(requests: int, stream: bool, directory: Path) -> float:
    config = directory / "farebox.yaml"
    config.write_text(CONFIG.format(db=directory / "farebox.db"), encoding="utf-8")
    app = create_app(load_settings(str(config)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            key = await _tenant_key(client)
            body: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 50, "stream": stream,
                                    "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
            auth = {"Authorization": f"Bearer {key}"}
            for _ in range(50):  # warm-up: caches, first-use paths
                await _chat(client, body, auth)
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(requests):
                await _chat(client, body, auth)
            profile.disable()
    return pstats.Stats(profile).total_calls / requests  # type: ignore[attr-defined, no-any-return]


async def _tenant_key(client: httpx.AsyncClient) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    await client.post("/admin/v1/tenants", json={"id": "t1", "plan": "starter"}, headers=admin)
    answer = await client.post("/admin/v1/tenants/t1/keys", json={"name": "k"}, headers=admin)
    return str(answer.json()["key"])


async def _chat(client: httpx.AsyncClient, body: dict[str, Any], auth: dict[str, str]) -> None:
    answer = await client.post("/v1/chat/completions", json=body, headers=auth)
    if answer.status_code != 200:
        raise SystemExit(f"bench.calls: {answer.status_code} {answer.text[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    os.environ["FAREBOX_ADMIN_KEY"] = ADMIN_KEY
    with tempfile.TemporaryDirectory(prefix="farebox-calls-") as directory:
        per_request = asyncio.run(count(args.requests, args.stream, Path(directory)))
    kind = "stream" if args.stream else "chat"
    print(f"{kind}: {per_request:.1f} Python calls per request")


if __name__ == "__main__":
    main()
