"""Issue 14: admin keys (``identity.admin_keys``) through the ``AccountStore`` role on every
backend: the role and the tenant_admin's tenant survive the round trip, the lookup by hash
finds the key, the listing holds admin keys only, and a revoked key is no longer usable."""

from __future__ import annotations

from typing import Any

from farebox.core.keys import hash_key
from farebox.identity.admin_keys import AdminKeys
from tests.contracts.backends import EVERY
from tests.contracts.builders import T0, tenant

BACKENDS = EVERY
SECRET = b"contract-secret"


async def test_admin_keys_round_trip(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    keys = AdminKeys(store, SECRET, lambda: T0)
    made, raw = await keys.create("acme-admin", "tenant_admin", "acme")
    viewer, _ = await keys.create("look", "viewer")
    assert raw.startswith("fba_") and made.key_hash == hash_key(SECRET, raw)
    found = await store.get_key_by_hash(hash_key(SECRET, raw))
    assert found is not None
    assert (found.kind, found.role, found.tenant_id) == ("admin", "tenant_admin", "acme")
    assert {k.id for k in await keys.list()} == {made.id, viewer.id}  # admin keys only
    assert await store.list_keys("acme", "tenant") == []  # never among the tenant's keys
    gone = await AdminKeys(store, SECRET, lambda: T0 + 5).revoke(made.id)
    assert gone.revoked_at == T0 + 5 and not gone.usable_at(T0 + 6)
    assert (await store.get_key(viewer.id)).role == "viewer"  # type: ignore[union-attr]
