"""The real ``farebox serve`` process with a tenant and key per plan, for end-to-end tests
that drive it with the official ``openai`` SDK (one setup for every such test module)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from tests.e2e import ServerProcess, create_tenant_key, db_path, serve, write_config


@dataclass
class SdkGateway:
    server: ServerProcess
    db: Path
    keys: dict[str, str]  # plan: the key of that plan's tenant

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.server.base_url}/v1", api_key=key, max_retries=0, timeout=20.0
        )


@contextmanager
def sdk_gateway(
    tmp: Path, tenants: Mapping[str, str], plans: Mapping[str, Any] | None = None
) -> Iterator[SdkGateway]:
    """Serve a config in ``tmp`` (``plans``, or ``write_config``'s) and create, for each
    ``plan: tenant id`` of ``tenants``, the tenant on that plan and a key."""
    config = write_config(tmp, plans=plans)
    with serve(config, cwd=tmp) as server:
        keys = {
            plan: create_tenant_key(server.base_url, id_, plan) for plan, id_ in tenants.items()
        }
        yield SdkGateway(server, db_path(tmp), keys)
