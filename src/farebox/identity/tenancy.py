"""Tenant and key administration, shared by the admin API and the CLI."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from farebox.core.keys import SERVICE_PREFIX, TENANT_PREFIX, display_prefix, hash_key, new_key
from farebox.core.money import format_usd
from farebox.core.records import (
    DEFAULT_WORKSPACE,
    GROUP_BY,
    ApiKey,
    KeyKind,
    LedgerEntry,
    Tenant,
    UsageQuery,
    UsageRow,
)
from farebox.core.upsell import PlanChange
from farebox.errors import InvalidRequest, NotFound
from farebox.stores.base import AccountStore, UpsellStore, UsageStore

TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BILLING_FIELDS = frozenset(
    {
        "stripe_customer_id",
        "lago_external_subscription_id",
        "lago_external_customer_id",  # Lago wallets name the customer (billing webhooks)
        "metronome_customer_id",
        "openmeter_subject",
    }
)


class TenancyStore(AccountStore, UsageStore, Protocol):
    """What tenancy uses: tenants and keys, and the usage it reports for a tenant."""


class Tenancy:
    def __init__(
        self,
        store: TenancyStore,
        secret: bytes,
        plans: Mapping[str, Any],
        clock: Callable[[], float] = time.time,
        *,
        upsell: UpsellStore | None = None,
    ) -> None:
        self._store = store
        self._upsell = upsell  # where plan changes are recorded (upsell conversions)
        self._secret = secret
        self._plans = plans
        self._clock = clock

    def reload_plans(self, plans: Mapping[str, Any]) -> None:
        self._plans = plans

    def now(self) -> float:
        return self._clock()

    def _check_plan(self, plan: str) -> None:
        if plan not in self._plans:
            raise InvalidRequest(
                f"Unknown plan {plan!r}; configured plans: {', '.join(sorted(self._plans))}.",
                param="plan",
            )

    async def create_tenant(
        self, tenant_id: str, name: str | None, plan: str, metadata: dict[str, Any] | None = None
    ) -> Tenant:
        if not TENANT_ID.match(tenant_id):
            raise InvalidRequest(
                "Tenant id must be 1-64 characters of letters, digits, '.', '_' or '-'.", param="id"
            )
        self._check_plan(plan)
        tenant = Tenant(
            id=tenant_id,
            name=name or tenant_id,
            plan=plan,
            created_at=self._clock(),
            metadata=metadata or {},
        )
        await self._store.create_tenant(tenant)
        return tenant

    async def tenant(self, tenant_id: str) -> Tenant:
        tenant = await self._store.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound(f"Tenant {tenant_id!r} not found.", code="tenant_not_found")
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        return await self._store.list_tenants()

    async def update_tenant(self, tenant_id: str, changes: dict[str, Any]) -> Tenant:
        current = await self.tenant(tenant_id)
        if "plan" in changes:
            self._check_plan(changes["plan"])
        if "billing" in changes:
            unknown = set(changes["billing"]) - BILLING_FIELDS
            if unknown:
                raise InvalidRequest(
                    f"Unknown billing field(s): {sorted(unknown)}.", param="billing"
                )
            changes["billing"] = {**current.billing, **changes["billing"]}
        updated = await self._store.update_tenant(tenant_id, changes)
        if self._upsell is not None and updated.plan != current.plan:
            change = PlanChange(tenant_id, current.plan, updated.plan, self._clock())
            await self._upsell.add_plan_change(change)
        return updated

    async def set_tenant_paused(
        self, tenant_id: str, paused: bool, reason: str | None = None
    ) -> Tenant:
        await self.tenant(tenant_id)
        return await self._store.update_tenant(
            tenant_id, {"paused": paused, "pause_reason": reason if paused else None}
        )

    async def create_key(
        self,
        tenant_id: str | None,
        name: str,
        *,
        kind: KeyKind = "tenant",
        expires_at: float | None = None,
        workspace: str = DEFAULT_WORKSPACE,
        metadata: dict[str, Any] | None = None,
        alert_threshold: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns the record and the secret, which is never stored.
        ``workspace``: the tenant's workspace the key belongs to (checked by the caller)."""
        if kind == "tenant":
            if tenant_id is None:
                raise InvalidRequest("A tenant key needs a tenant.", param="tenant")
            await self.tenant(tenant_id)
        if expires_at is not None and expires_at <= self._clock():
            raise InvalidRequest("expires_at must be in the future.", param="expires_at")
        raw = new_key(TENANT_PREFIX if kind == "tenant" else SERVICE_PREFIX, secrets.token_urlsafe)
        key = ApiKey(
            id=f"key_{uuid.uuid4().hex[:20]}",
            key_hash=hash_key(self._secret, raw),
            kind=kind,
            name=name,
            created_at=self._clock(),
            tenant_id=tenant_id if kind == "tenant" else None,
            prefix=display_prefix(raw),
            expires_at=expires_at,
            workspace_id=workspace,
            metadata=metadata or {},
            alert_threshold=alert_threshold,
        )
        await self._store.create_key(key)
        return key, raw

    async def key(self, key_id: str) -> ApiKey:
        key = await self._store.get_key(key_id)
        if key is None or key.kind == "admin":
            raise NotFound(f"Key {key_id!r} not found.", code="key_not_found")
        return key

    async def revoke_key(self, key_id: str) -> ApiKey:
        await self.key(key_id)
        return await self._store.update_key(key_id, {"revoked_at": self._clock()})

    async def set_key_paused(self, key_id: str, paused: bool, reason: str | None = None) -> ApiKey:
        await self.key(key_id)
        return await self._store.update_key(
            key_id, {"paused": paused, "pause_reason": reason if paused else None}
        )

    async def usage(
        self, tenant_id: str | None, start: float | None, end: float | None, group_by: str | None
    ) -> list[UsageRow]:
        if group_by is not None and group_by not in GROUP_BY:
            raise InvalidRequest(
                f"group_by must be one of {', '.join(GROUP_BY)}.", param="group_by"
            )
        return await self._store.usage(UsageQuery(tenant_id, start, end, group_by))


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "plan": tenant.plan,
        "paused": tenant.paused,
        "pause_reason": tenant.pause_reason,
        "billing": tenant.billing,
        "metadata": tenant.metadata,
        "budgets": tenant.budgets,
        "rate_limits": tenant.rate_limits,
        "created_at": tenant.created_at,
    }


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "kind": key.kind,
        "name": key.name,
        "tenant": key.tenant_id,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked": key.revoked_at is not None,
        "paused": key.paused,
        "pause_reason": key.pause_reason,
        "budgets": key.budgets,
        "rate_limits": key.rate_limits,
        "workspace": key.workspace_id if key.tenant_id is not None else None,
        "metadata": key.metadata,
        "alert_threshold": key.alert_threshold,
    }


def unsettled_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "request_id": entry.request_id,
        "reservation_id": entry.reservation_id,
        "tenant": entry.tenant_id,
        "key_id": entry.key_id,
        "model": entry.model_served,
        "provider": entry.provider,
        "started_at": entry.started_at,
        "reclaimed_at": entry.finished_at,
        "reserved_usd": entry.metadata.get("reserved_usd"),
    }


def usage_json(row: UsageRow, group_by: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {group_by: row.group} if group_by else {}
    out.update(
        requests=row.requests,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost_usd=format_usd(row.cost),
        revenue_usd=format_usd(row.revenue),
    )
    return out
