"""The ``AccountStore`` contract: tenants, keys and the auth epoch that every change to them
bumps, on every backend (PostgreSQL alone keeps tenants and keys but no auth epoch: the
scaled store keeps that in Redis); plus two SQLite stores sharing one file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from farebox.core.records import UsageQuery
from farebox.errors import Conflict, NotFound
from farebox.stores.sqlite.store import SQLiteStore
from tests.contracts.backends import ALL_IN_ONE, EVERY
from tests.contracts.builders import T0, entry, key, tenant

BACKENDS = EVERY


# --- tenants -----------------------------------------------------------------------------


async def test_tenant_create_get_list(store: Any) -> None:
    assert await store.get_tenant("acme") is None
    assert await store.list_tenants() == []
    acme = tenant("acme", billing={"stripe_customer_id": "cus_1"}, metadata={"tier": 2, "x": [1]})
    await store.create_tenant(acme)
    await store.create_tenant(tenant("globex", plan="pro", created_at=T0 + 1))
    assert await store.get_tenant("acme") == acme
    assert {t.id for t in await store.list_tenants()} == {"acme", "globex"}
    assert (await store.get_tenant("globex")).plan == "pro"  # type: ignore[union-attr]


async def test_tenant_create_conflict(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    with pytest.raises(Conflict):
        await store.create_tenant(tenant("acme", name="Other", plan="pro"))
    stored = await store.get_tenant("acme")
    assert stored is not None and stored.name == "Acme" and stored.plan == "free"
    assert len(await store.list_tenants()) == 1


async def test_tenant_update(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    updated = await store.update_tenant(
        "acme", {"plan": "pro", "paused": True, "pause_reason": "spike", "billing": {"a": "b"}}
    )
    assert updated.plan == "pro" and updated.paused is True and updated.pause_reason == "spike"
    assert updated.billing == {"a": "b"}
    assert await store.get_tenant("acme") == updated
    again = await store.update_tenant("acme", {"paused": False, "pause_reason": None})
    assert again.paused is False and again.pause_reason is None and again.plan == "pro"
    assert again.name == "Acme" and again.created_at == T0


async def test_tenant_update_missing_is_not_found(store: Any) -> None:
    with pytest.raises(NotFound):
        await store.update_tenant("ghost", {"plan": "pro"})
    assert await store.get_tenant("ghost") is None


# --- keys --------------------------------------------------------------------------------


async def test_keys_by_id_and_hash(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    k = key("k1", "acme", prefix="fbx_abcdef", expires_at=T0 + 60)
    await store.create_key(k)
    assert await store.get_key("k1") == k
    assert await store.get_key_by_hash("hash-k1") == k
    assert await store.get_key_by_hash("hash-nope") is None
    assert await store.get_key("nope") is None


async def test_key_duplicate_is_conflict(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    await store.create_key(key("k1", "acme"))
    with pytest.raises(Conflict):
        await store.create_key(key("k1", "acme", key_hash="hash-other"))
    with pytest.raises(Conflict):
        await store.create_key(key("k2", "acme", key_hash="hash-k1"))
    assert await store.get_key("k2") is None
    assert (await store.get_key_by_hash("hash-k1")).id == "k1"  # type: ignore[union-attr]


async def test_list_keys_filters(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    await store.create_tenant(tenant("globex"))
    await store.create_key(key("a2", "acme", created_at=T0 + 2))
    await store.create_key(key("a1", "acme", created_at=T0 + 1))
    await store.create_key(key("g1", "globex", created_at=T0 + 3))
    await store.create_key(key("s1", None, created_at=T0 + 4))
    await store.create_key(key("s0", None, created_at=T0 + 0.5))

    async def ids(tenant_id: str | None, kind: str | None = None) -> list[str]:
        return [k.id for k in await store.list_keys(tenant_id, kind)]

    assert await ids("acme") == ["a1", "a2"]
    assert await ids("globex") == ["g1"]
    assert await ids("nobody") == []
    assert await ids(None) == ["s0", "a1", "a2", "g1", "s1"]
    assert await ids(None, "service") == ["s0", "s1"]
    assert await ids(None, "tenant") == ["a1", "a2", "g1"]
    assert await ids("acme", "tenant") == ["a1", "a2"]
    assert await ids("acme", "service") == []


async def test_key_update(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    await store.create_key(key("k1", "acme"))
    revoked = await store.update_key("k1", {"revoked_at": T0 + 10})
    assert revoked.revoked_at == T0 + 10
    assert revoked.usable_at(T0 + 5) and not revoked.usable_at(T0 + 10)
    assert await store.get_key_by_hash("hash-k1") == revoked
    paused = await store.update_key("k1", {"paused": True, "pause_reason": "abuse"})
    assert paused.paused is True and paused.revoked_at == T0 + 10
    assert await store.get_key("k1") == paused
    with pytest.raises(NotFound):
        await store.update_key("ghost", {"paused": True})


# --- auth epoch --------------------------------------------------------------------------


@pytest.mark.backends(*ALL_IN_ONE)
async def test_auth_epoch_moves_on_every_tenant_and_key_change(store: Any) -> None:
    seen = [await store.auth_epoch()]

    async def bumped() -> None:
        now = await store.auth_epoch()
        assert now > seen[-1], (seen, now)
        seen.append(now)

    async def unchanged() -> None:
        assert await store.auth_epoch() == seen[-1]

    await store.create_tenant(tenant("acme"))
    await bumped()
    await store.update_tenant("acme", {"paused": True})
    await bumped()
    await store.update_tenant("acme", {"paused": False})
    await bumped()
    await store.create_key(key("k1", "acme"))
    await bumped()
    await store.update_key("k1", {"revoked_at": T0})
    await bumped()
    await store.update_key("k1", {"paused": True})
    await bumped()
    # reads, the ledger and meta do not invalidate authentication caches
    await store.get_tenant("acme")
    await store.get_key_by_hash("hash-k1")
    await store.list_keys(None)
    await store.append_ledger([entry("r1"), entry("r2")])
    await store.append_ledger([entry("r1")])
    await store.ledger()
    await store.usage(UsageQuery(group_by="tenant"))
    await store.put_meta_if_absent("x", "1")
    await unchanged()


# --- durability and sharing (SQLite) -----------------------------------------------------


async def test_sqlite_survives_reopen_and_shares_epoch(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one, two = SQLiteStore(path), SQLiteStore(path)
    await one.open()
    await two.open()
    try:
        await one.create_tenant(tenant("acme"))
        await one.create_key(key("k1", "acme"))
        await one.append_ledger([entry("r1", cost=42)])
        await one.put_meta_if_absent("m", "1")
        before = await two.auth_epoch()
        assert before == await one.auth_epoch()
        assert await two.get_key_by_hash("hash-k1") is not None
        await two.update_key("k1", {"revoked_at": T0})
        # the other instance sees the change at once, without reopening
        assert await one.auth_epoch() > before
        assert (await one.get_key("k1")).revoked_at == T0  # type: ignore[union-attr]
        assert await two.put_meta_if_absent("m", "2") == "1"
    finally:
        await one.close()
        await two.close()
    three = SQLiteStore(path)
    await three.open()
    try:
        assert (await three.get_tenant("acme")) == tenant("acme")
        assert [e.cost for e in await three.ledger()] == [42]
        assert await three.get_meta("m") == "1"
        revoked = await three.get_key("k1")
        assert revoked is not None and revoked.revoked_at == T0
    finally:
        await three.close()


def test_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        tenant("acme").plan = "pro"  # type: ignore[misc]
