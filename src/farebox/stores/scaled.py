"""The scaled-out store: PostgreSQL for tenants, keys and the ledger; Redis for budget
counters, leased reservations and the auth epoch. Correct across many replicas.

Settlement is two steps (the ledger commits in PostgreSQL, then Redis settles). A replica
that dies between them leaves a lease that expires; reclaiming it finds the committed
ledger entry and settles from it, so the spend is neither lost nor counted twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from farebox.core.budgets import Hold, HoldState
from farebox.core.records import (
    ApiKey,
    LedgerEntry,
    Reservation,
    ReserveOutcome,
    Tenant,
    UsageQuery,
    UsageRow,
)
from farebox.errors import LimiterUnavailable
from farebox.stores.postgres import PostgresStore
from farebox.stores.redis_budgets import RedisBudgets

REDIS_CONNECTIONS = 64
REDIS_WAIT_S = 10.0


class ScaledStore:
    def __init__(self, pg: PostgresStore, budgets: RedisBudgets, client: aioredis.Redis) -> None:
        self._pg = pg
        self.traffic = pg.traffic  # counters are flushed off the request path: PostgreSQL
        self._budgets = budgets
        self._client = client

    @classmethod
    def from_urls(cls, database_url: str, redis_url: str, *, outbox: bool = True) -> ScaledStore:
        # requests beyond the pool wait for a connection instead of failing
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_WAIT_S
        )
        client = aioredis.Redis(connection_pool=pool)
        return cls(PostgresStore(database_url, outbox=outbox), RedisBudgets(client), client)

    async def open(self) -> None:
        await self._pg.open()
        await self._client.ping()

    async def close(self) -> None:
        await self._pg.close()
        await self._client.aclose()

    async def ping(self) -> bool:
        return bool(await self._pg.ping()) and bool(await self._client.ping())

    # tenants and keys: every change bumps the shared auth epoch -------------------------
    async def create_tenant(self, tenant: Tenant) -> None:
        await self._pg.create_tenant(tenant)
        await self._budgets.bump_epoch()

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self._pg.get_tenant(tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        return await self._pg.list_tenants()

    async def update_tenant(self, tenant_id: str, changes: dict[str, Any]) -> Tenant:
        tenant = await self._pg.update_tenant(tenant_id, changes)
        await self._budgets.bump_epoch()
        return tenant

    async def create_key(self, key: ApiKey) -> None:
        await self._pg.create_key(key)
        await self._budgets.bump_epoch()

    async def get_key(self, key_id: str) -> ApiKey | None:
        return await self._pg.get_key(key_id)

    async def get_key_by_hash(self, key_hash: str) -> ApiKey | None:
        return await self._pg.get_key_by_hash(key_hash)

    async def list_keys(self, tenant_id: str | None, kind: str | None = None) -> list[ApiKey]:
        return await self._pg.list_keys(tenant_id, kind)

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        key = await self._pg.update_key(key_id, changes)
        await self._budgets.bump_epoch()
        return key

    async def auth_epoch(self) -> int:
        with _redis_required():
            return await self._budgets.auth_epoch()

    # ledger ----------------------------------------------------------------------------
    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        await self._pg.append_ledger(entries)
        await self._budgets.settle(entries)

    def append_ledger_now(self, entries: Sequence[LedgerEntry]) -> bool:
        return False  # PostgreSQL and Redis are over the network

    async def ledger(
        self, tenant_id: str | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        return await self._pg.ledger(tenant_id, limit)

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        return await self._pg.usage(query)

    async def get_meta(self, name: str) -> str | None:
        return await self._pg.get_meta(name)

    async def put_meta_if_absent(self, name: str, value: str) -> str:
        return await self._pg.put_meta_if_absent(name, value)

    # budgets ---------------------------------------------------------------------------
    async def reserve(self, reservation: Reservation, *, busy: bool = False) -> ReserveOutcome:
        with _redis_required():
            return await self._budgets.reserve(reservation)

    async def extend_leases(self, ids: Sequence[str], expires_at: float) -> None:
        await self._budgets.extend(ids, expires_at)

    async def reclaim_expired(self, now: float) -> list[LedgerEntry]:
        expired = await self._budgets.expired(now)
        if not expired:
            return []
        found = await self._pg.existing_entries([e.request_id for e in expired])
        committed = [
            found[e.request_id]
            for e in expired
            if e.request_id in found and found[e.request_id].status != "unsettled"
        ]
        if committed:  # the holder died after its ledger commit: settle from the ledger
            await self._budgets.settle(committed)
        unsettled = [e for e in expired if e.request_id not in found]
        await self._pg.insert_ledger_if_absent(unsettled)
        return unsettled

    # billing export: the outbox lives in PostgreSQL with the ledger
    async def ledger_since(self, seq: int, limit: int) -> list[tuple[int, LedgerEntry]]:
        return await self._pg.ledger_since(seq, limit)

    async def claim_exporter(self) -> bool:
        return await self._pg.claim_exporter()

    async def export_cursor(self, sink: str) -> int:
        return await self._pg.export_cursor(sink)

    async def set_export_cursor(self, sink: str, seq: int) -> None:
        await self._pg.set_export_cursor(sink, seq)

    async def add_dead_letters(self, sink: str, items: Sequence[dict[str, Any]]) -> None:
        await self._pg.add_dead_letters(sink, items)

    async def dead_letters(self, sink: str | None = None) -> list[dict[str, Any]]:
        return await self._pg.dead_letters(sink)

    async def remove_dead_letters(self, sink: str, keys: Sequence[str]) -> None:
        await self._pg.remove_dead_letters(sink, keys)

    async def breakers(self) -> dict[str, float]:
        with _redis_required():
            return await self._budgets.breakers()

    async def set_breaker(self, deployment: str, open_until: float) -> None:
        with _redis_required():
            await self._budgets.set_breaker(deployment, open_until)

    async def claim_probe(self, deployment: str, now: float, until: float) -> bool:
        with _redis_required():
            return await self._budgets.claim_probe(deployment, now, until)

    async def budget_states(self, holds: Sequence[Hold]) -> list[HoldState]:
        with _redis_required():
            return await self._budgets.states(holds)

    async def record_alert(
        self, hold: Hold, threshold: int, tenant: str | None, now: float, detail: dict[str, Any]
    ) -> bool:
        return await self._pg.record_alert(hold, threshold, tenant, now, detail)

    async def alerts(self, tenant_id: str | None) -> list[dict[str, Any]]:
        return await self._pg.alerts(tenant_id)


@contextlib.contextmanager
def _redis_required() -> Iterator[None]:
    """Budgets, rate limits and key revocation live in Redis. Without it nothing can be
    checked, so requests are refused with a 503 (fail closed), never admitted unchecked."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise LimiterUnavailable(
            "The gateway cannot reach its shared counters (Redis), so budgets and rate limits "
            "cannot be checked; the request was refused and not billed. Retry shortly."
        ) from exc
