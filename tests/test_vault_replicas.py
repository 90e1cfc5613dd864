"""Issue [14], acceptance 6 on the replicas' backend (PostgreSQL + Redis): a credential rotated
through one replica is used by the other as soon as it hears of the change (the shared auth
epoch: pub/sub, within ``BOUND_S``), with no restart; and PostgreSQL holds no plaintext.

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (skipped when absent, failed
with FAREBOX_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from farebox.providers.mock import MockOptions, MockProvider
from farebox.stores.redis.epoch import BOUND_S
from tests.outage import dsn, fresh_databases, redis_url, require_services
from tests.test_auth_epoch_fanout import SLACK_S, until

CHAT = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def database() -> Iterator[str]:
    require_services()
    with fresh_databases(1) as [name]:
        yield name


async def test_a_rotation_on_one_replica_reaches_the_other(
    make_gateway: Any, database: str
) -> None:
    sim = {"kind": "mock", "api_key": "integration:openai-prod"}
    config = {"database": dsn(database), "redis": redis_url(), "providers": {"sim": sim}}
    env = {"FAREBOX_SECRET": secrets.token_hex(32)}
    first, second = f"sk-rep-{secrets.token_hex(12)}", f"sk-rep-{secrets.token_hex(12)}"
    mock_a, mock_b = MockProvider("sim", MockOptions()), MockProvider("sim", MockOptions())
    async with (
        make_gateway(config, env=env, providers={"sim": mock_a}) as a,
        make_gateway(config, env=env, providers={"sim": mock_b}) as b,
    ):
        raw = await a.tenant_key("acme")
        auth = {"Authorization": f"Bearer {raw}"}
        body = {"name": "openai-prod", "provider": "openai", "api_key": first}
        assert (await a.client.post("/admin/v1/integrations", json=body,
                                    headers=a.admin)).status_code == 201  # fmt: skip

        async def b_uses(key: str) -> bool:
            r = await b.client.post("/v1/chat/completions", json=CHAT, headers=auth)
            return r.status_code == 200 and mock_b.last_api_key == key

        await until("replica B uses the credential", lambda: b_uses(first), BOUND_S + SLACK_S)
        r = await a.client.post("/admin/v1/integrations/openai-prod/rotate",
                                json={"api_key": second}, headers=a.admin)  # fmt: skip
        assert r.status_code == 200 and second not in r.text
        rotated_at = time.monotonic()
        r = await a.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert r.status_code == 200 and mock_a.last_api_key == second  # at once where rotated
        await until("replica B uses the rotated key", lambda: b_uses(second), BOUND_S + SLACK_S)
        print(f"replica B used the rotated key {time.monotonic() - rotated_at:.4f} s later")
        dump = await a.store.credentials.list_credentials(None)
        assert all(first.encode() not in c.ciphertext and second.encode() not in c.ciphertext
                   for c in dump)  # fmt: skip
