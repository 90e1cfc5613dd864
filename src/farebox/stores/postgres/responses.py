"""Stored Responses API answers in PostgreSQL (the ``ResponseStore`` role)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from farebox.core.records import StoredResponse
from farebox.stores.responses_rows import RESPONSE_COLS, response_from, response_values


class PostgresResponses:
    def __init__(self, pool: Callable[[], Any], schema: str) -> None:
        self._pool = pool  # the store's connection pool, once it is open
        cols = ",".join(RESPONSE_COLS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in RESPONSE_COLS[1:])
        self._put = (
            f"INSERT INTO {schema}.stored_responses({cols}) "
            f"VALUES ({','.join(f'${i}' for i in range(1, len(RESPONSE_COLS) + 1))}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        self._get = (
            f"SELECT {cols} FROM {schema}.stored_responses "
            "WHERE id = $1 AND tenant_id = $2 AND expires_at > $3"
        )
        self._delete = f"DELETE FROM {schema}.stored_responses WHERE id = $1 AND tenant_id = $2"
        self._purge = f"DELETE FROM {schema}.stored_responses WHERE expires_at <= $1"

    async def put(self, stored: StoredResponse) -> None:
        await self._pool().execute(self._put, *without_nul(response_values(stored)))

    async def put_many(self, stored: Sequence[StoredResponse]) -> None:
        if len(stored) == 1:
            await self.put(stored[0])
        elif stored:  # asyncpg's executemany runs in one transaction
            await self._pool().executemany(
                self._put, [without_nul(response_values(s)) for s in stored]
            )

    async def get(self, tenant_id: str, response_id: str, now: float) -> StoredResponse | None:
        row = await self._pool().fetchrow(self._get, response_id, tenant_id, now)
        return None if row is None else response_from(list(row))  # JSONB decoded by the pool

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        status = await self._pool().execute(self._delete, response_id, tenant_id)
        return _count(status) > 0

    async def purge(self, now: float) -> int:
        return _count(await self._pool().execute(self._purge, now))


def without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb refuse U+0000, which a client can put in its input: dropped,
    so that such a conversation can still be kept."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def _count(status: str) -> int:
    """The row count of a command tag such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])
