"""Admin keys (``fba_...``): created with a role, listed, revoked; shared by the admin API and
the CLI. They are ``ApiKey`` records of kind ``admin`` (``role`` set; ``tenant_id`` set for a
``tenant_admin`` only), hashed under the server secret like tenant keys: the secret is
returned once, at creation, and never stored."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from farebox.core.keys import ADMIN_PREFIX, display_prefix, hash_key, new_key
from farebox.core.records import ADMIN_ROLES, ApiKey
from farebox.errors import InvalidRequest, NotFound
from farebox.identity.roles import role_of
from farebox.stores.base import AccountStore


class AdminKeys:
    """Create, list and revoke admin keys in the account store."""

    def __init__(
        self, store: AccountStore, secret: bytes, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._secret = secret
        self._clock = clock

    async def create(
        self, name: str, role: str, tenant_id: str | None = None
    ) -> tuple[ApiKey, str]:
        """A new admin key and its secret (shown this once). A ``tenant_admin`` needs an
        existing ``tenant``; any other role takes none."""
        if role not in ADMIN_ROLES:
            raise InvalidRequest(
                f"Unknown role {role!r}; one of {', '.join(ADMIN_ROLES)}.", param="role"
            )
        if role == "tenant_admin":
            if not tenant_id:
                raise InvalidRequest("A tenant_admin key needs a tenant.", param="tenant")
            if await self._store.get_tenant(tenant_id) is None:
                raise NotFound(f"Tenant {tenant_id!r} not found.", code="tenant_not_found")
        elif tenant_id is not None:
            raise InvalidRequest(
                f"Only a tenant_admin key has a tenant (this one is {role!r}).", param="tenant"
            )
        raw = new_key(ADMIN_PREFIX, secrets.token_urlsafe)
        key = ApiKey(
            id=f"adk_{uuid.uuid4().hex[:20]}",
            key_hash=hash_key(self._secret, raw),
            kind="admin",
            name=name,
            created_at=self._clock(),
            tenant_id=tenant_id,
            prefix=display_prefix(raw),
            role=role_of(role),
        )
        await self._store.create_key(key)
        return key, raw

    async def list(self) -> list[ApiKey]:
        """Every admin key, revoked ones included, oldest first."""
        keys = await self._store.list_keys(None, "admin")
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def key(self, key_id: str) -> ApiKey:
        key = await self._store.get_key(key_id)
        if key is None or key.kind != "admin":
            raise NotFound(f"Admin key {key_id!r} not found.", code="admin_key_not_found")
        return key

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke an admin key: it opens nothing from now on, in every worker (the store's
        auth epoch is bumped). Revoking a revoked key answers it as it is."""
        key = await self.key(key_id)
        if key.revoked_at is not None:
            return key
        return await self._store.update_key(key_id, {"revoked_at": self._clock()})


def admin_key_json(key: ApiKey) -> dict[str, Any]:
    """An admin key as the API lists it (never its secret nor its hash)."""
    return {
        "id": key.id,
        "object": "admin_key",
        "name": key.name,
        "role": key.role,
        "tenant": key.tenant_id,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "revoked": key.revoked_at is not None,
        "revoked_at": key.revoked_at,
    }
