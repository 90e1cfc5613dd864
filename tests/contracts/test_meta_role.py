"""The ``MetaStore`` contract, on every backend: a value is stored once, then kept."""

from __future__ import annotations

from typing import Any

from tests.contracts.backends import EVERY

BACKENDS = EVERY


async def test_meta(store: Any) -> None:
    assert await store.get_meta("admin_key_hash") is None
    assert await store.put_meta_if_absent("admin_key_hash", "first") == "first"
    assert await store.put_meta_if_absent("admin_key_hash", "second") == "first"
    assert await store.get_meta("admin_key_hash") == "first"
    assert await store.put_meta_if_absent("other", "x") == "x"
    assert await store.get_meta("other") == "x"
    assert await store.get_meta("admin_key_hash") == "first"
