"""Stored Responses API answers in process memory (the ``ResponseStore`` role)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from farebox.core.records import StoredResponse


def _copy(stored: StoredResponse) -> StoredResponse:
    """A copy sharing nothing mutable with the original (as a database row would)."""
    return copy.deepcopy(stored)


class MemoryResponses:
    def __init__(self) -> None:
        self._rows: dict[str, StoredResponse] = {}

    async def put(self, stored: StoredResponse) -> None:
        self._rows[stored.id] = _copy(stored)

    async def put_many(self, stored: Sequence[StoredResponse]) -> None:
        for one in stored:
            await self.put(one)

    async def get(self, tenant_id: str, response_id: str, now: float) -> StoredResponse | None:
        row = self._rows.get(response_id)
        if row is None or row.tenant_id != tenant_id or not row.live_at(now):
            return None
        return _copy(row)

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        row = self._rows.get(response_id)
        if row is None or row.tenant_id != tenant_id:
            return False
        del self._rows[response_id]
        return True

    async def purge(self, now: float) -> int:
        gone = [i for i, row in self._rows.items() if not row.live_at(now)]
        for response_id in gone:
            del self._rows[response_id]
        return len(gone)
