"""What every backend has besides its roles: it opens, answers a ping, and closes."""

from __future__ import annotations

from typing import Any

from tests.contracts.backends import EVERY

BACKENDS = EVERY


async def test_ping(store: Any) -> None:
    assert await store.ping() is True
