"""Stored Responses API answers in SQLite (the ``ResponseStore`` role)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from farebox.core.records import StoredResponse
from farebox.stores.responses_rows import JSON_COLS, RESPONSE_COLS, response_from, response_values
from farebox.stores.sqlite.conn import Runner

_JSON = tuple(RESPONSE_COLS.index(name) for name in JSON_COLS)
_PUT = (
    f"INSERT OR REPLACE INTO stored_responses({','.join(RESPONSE_COLS)}) "
    f"VALUES ({','.join('?' * len(RESPONSE_COLS))})"
)
_GET = (
    f"SELECT {','.join(RESPONSE_COLS)} FROM stored_responses "
    "WHERE id = ? AND tenant_id = ? AND expires_at > ?"
)


def _decoded(row: Any) -> StoredResponse:
    values = list(row)
    for i in _JSON:
        values[i] = orjson.loads(values[i])
    return response_from(values)


class SQLiteResponses:
    def __init__(
        self, write: Runner[Any], read: Runner[Any], put: Runner[Any] | None = None
    ) -> None:
        self._write = write  # runs a function in a write transaction
        self._read = read  # runs a function on the store's connection
        # the answers' own writes, often on the request path: small and frequent, so the
        # store may commit them on the caller's connection; the purge (and a delete) may
        # be large and go through ``write`` (the store's thread), off the event loop
        self._put = put or write

    async def put(self, stored: StoredResponse) -> None:
        await self.put_many([stored])

    async def put_many(self, stored: Sequence[StoredResponse]) -> None:
        rows = []
        for one in stored:
            values = response_values(one)
            for i in _JSON:
                values[i] = orjson.dumps(values[i]).decode()
            rows.append(values)
        await self._put(lambda db: db.executemany(_PUT, rows) and None)

    async def get(self, tenant_id: str, response_id: str, now: float) -> StoredResponse | None:
        params = (response_id, tenant_id, now)
        row = await self._read(lambda db: db.execute(_GET, params).fetchone())
        return None if row is None else _decoded(row)

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        sql = "DELETE FROM stored_responses WHERE id = ? AND tenant_id = ?"
        gone = await self._write(lambda db: db.execute(sql, (response_id, tenant_id)).rowcount)
        return bool(gone)

    async def purge(self, now: float) -> int:
        sql = "DELETE FROM stored_responses WHERE expires_at <= ?"
        return int(await self._write(lambda db: db.execute(sql, (now,)).rowcount))
