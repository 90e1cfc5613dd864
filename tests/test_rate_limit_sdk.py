"""Acceptance 4 of issue [3]: the official ``openai`` SDK's own retry, honouring the
gateway's ``retry-after-ms``, succeeds once the window frees. The window is a short one
(2 requests per 2 s), injected through the plan's ``window_s``, so the test takes seconds.

Also: Redis going away mid-run is a 503 ``limiter_unavailable`` (fail closed), never an
admission without the shared counters.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e import admin_headers, create_tenant_key, free_port, running, serve, write_config
from tests.test_budget_leases import serve_args
from tests.test_budget_replicas import Backend, backend  # noqa: F401

MESSAGES = [{"role": "user", "content": "retry me"}]
PLANS = {"tight": {"models": ["*"], "rate_limits": [{"scope": "key", "requests_per_minute": 2,
                                                      "window_s": 2}]}}  # fmt: skip


def _client(base_url: str, key: str, retries: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=retries, timeout=20)


def test_the_sdk_retry_succeeds_once_the_window_frees(tmp_path: Path) -> None:
    config = write_config(tmp_path, plans=PLANS)
    with serve(config, cwd=tmp_path) as server:
        key = create_tenant_key(server.base_url, "t", "tight")
        with _client(server.base_url, key, 0) as client:
            for _ in range(2):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert refused.value.code == "rate_limit_exceeded"
        headers = refused.value.response.headers
        wait_ms = int(headers["retry-after-ms"])
        assert 0 < wait_ms <= 3000 and 1 <= int(headers["retry-after"]) <= 3
        assert headers["x-ratelimit-remaining-requests"] == "0"
        started = time.monotonic()
        with _client(server.base_url, key, 5) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
        waited = time.monotonic() - started
        assert raw.parse().choices[0].message.content
        assert raw.retries_taken >= 1  # the SDK was refused first, then retried by itself
        # it waited as told (not its own exponential backoff, which starts at 0.5 s)
        assert waited * 1000 >= wait_ms - 1000
        assert int(raw.headers["x-ratelimit-remaining-requests"]) in (0, 1)


@pytest.fixture
def own_redis() -> Iterator[subprocess.Popen[bytes]]:
    """A private redis-server this test may kill."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc.port = port  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    import redis

    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield proc
    proc.kill()
    proc.wait()


def test_redis_unreachable_is_a_503_not_an_unchecked_admission(
    tmp_path: Path,
    backend: Backend,  # noqa: F811
    own_redis: subprocess.Popen[bytes],
) -> None:
    redis_url = f"redis://127.0.0.1:{own_redis.port}/0"  # type: ignore[attr-defined]
    config = write_config(tmp_path, plans=PLANS, database=backend.database, redis=redis_url)
    port = free_port()
    with running(serve_args(config, port), cwd=tmp_path, env=backend.env(), port=port) as server:
        key = create_tenant_key(server.base_url, "t", "tight")
        auth = {"Authorization": f"Bearer {key}"}
        body = {"model": "gpt-4o-mini", "messages": MESSAGES}
        url = f"{server.base_url}/v1/chat/completions"
        assert httpx.post(url, json=body, headers=auth, timeout=10).status_code == 200
        own_redis.kill()
        own_redis.wait()
        for _ in range(3):
            r = httpx.post(url, json=body, headers=auth, timeout=30)
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "limiter_unavailable" and "Redis" in error["message"]
        ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert ready.status_code == 503
        with httpx.Client(headers=admin_headers(), timeout=10) as admin:
            usage = admin.get(f"{server.base_url}/admin/v1/usage", params={"tenant": "t"})
        assert usage.status_code == 200
    rows = backend.ledger("t")
    assert len(rows) == 1  # nothing was forwarded without the counters
