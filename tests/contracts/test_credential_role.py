"""The ``CredentialStore`` contract (``Store.credentials``: the vault's sealed provider keys,
one per owner and name, replaced by compare-and-set, every change bumping the auth epoch) on
every backend that keeps it."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from farebox.core.credentials import Credential
from farebox.errors import Conflict

BACKENDS = ("memory", "sqlite", "postgres", "postgres+redis")
T0 = 1_793_577_600.0


def sealed(
    owner: str, name: str, blob: bytes = b"\x00\xffcipher", version: str = "v1"
) -> Credential:
    return Credential(owner, name, "openai", blob, b"n" * 12, version, "wxyz", T0)


async def epoch(store: Any) -> int | None:
    return await store.auth_epoch() if hasattr(store, "auth_epoch") else None


async def test_create_get_list_delete(store: Any) -> None:
    c = store.credentials
    platform, tenant = sealed("", "openai-prod"), sealed("acme", "openai")
    before = await epoch(store)
    await c.create_credential(platform)
    await c.create_credential(tenant)
    assert before is None or await epoch(store) == before + 2
    assert await c.get_credential("", "openai-prod") == platform
    assert await c.get_credential("acme", "openai") == tenant
    assert await c.get_credential("beta", "openai") is None
    assert await c.list_credentials("") == [platform]
    assert await c.list_credentials(None) == [platform, tenant]
    with pytest.raises(Conflict):
        await c.create_credential(sealed("", "openai-prod", b"other"))
    assert await c.delete_credential("acme", "openai") is True
    assert await c.delete_credential("acme", "openai") is False
    assert await c.list_credentials("acme") == []


async def test_replace_is_a_compare_and_set(store: Any) -> None:
    c = store.credentials
    first = sealed("", "k")
    await c.create_credential(first)
    a = dataclasses.replace(
        first, ciphertext=b"a", kek_version="v2", last4="aaaa", rotated_at=T0 + 1
    )
    b = dataclasses.replace(
        first, ciphertext=b"b", kek_version="v2", last4="bbbb", rotated_at=T0 + 2
    )
    before = await epoch(store)
    won = await asyncio.gather(c.replace_credential(first, a), c.replace_credential(first, b))
    assert sorted(won) == [False, True]
    assert before is None or await epoch(store) == before + 1
    stored = await c.get_credential("", "k")
    assert stored in (a, b) and stored.created_at == T0
    assert await c.replace_credential(first, a) is False  # stale
