"""What the two SQL stores (SQLite and PostgreSQL) share: the columns of the tables that hold
records, filters written in either placeholder style, the check on an update's changes, and
reading and updating tenants and keys (``SQLAccounts``), which both do alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from farebox.core.records import ApiKey, LedgerEntry, Tenant

TENANT_COLS = (
    "id", "name", "plan", "created_at", "paused", "pause_reason", "billing", "metadata", "budgets",
    "rate_limits",
)  # fmt: skip
KEY_COLS = (
    "id", "key_hash", "kind", "name", "created_at", "tenant_id", "prefix", "expires_at",
    "revoked_at", "paused", "pause_reason", "budgets", "rate_limits", "workspace_id", "metadata",
    "alert_threshold", "role",
)  # fmt: skip
LEDGER_COLS = tuple(f.name for f in dataclasses.fields(LedgerEntry))


@dataclasses.dataclass(frozen=True, slots=True)
class Dialect:
    """How a database spells an always-true condition and its parameters (``?`` or ``$n``)."""

    true: str
    numbered: bool

    def mark(self, n: int) -> str:
        """The placeholder of the ``n``-th parameter (from 1)."""
        return f"${n}" if self.numbered else "?"

    def where(self, conditions: Iterable[tuple[str, Any]]) -> tuple[str, list[Any]]:
        """``true AND c1 AND ...`` for each ``(clause, value)`` whose value is not None, the
        clause (``"tenant_id = "``) followed by its placeholder; and the values, in order."""
        clauses, params = [self.true], []
        for clause, value in conditions:
            if value is not None:
                params.append(value)
                clauses.append(clause + self.mark(len(params)))
        return " AND ".join(clauses), params


SQLITE = Dialect("1=1", numbered=False)
POSTGRES = Dialect("TRUE", numbered=True)


def check_changes(cols: Sequence[str], changes: Mapping[str, Any]) -> None:
    """An update may change any column but the id; anything else is a programming error."""
    unknown = set(changes) - set(cols) - {"id"}
    if unknown or "id" in changes:
        raise ValueError(f"cannot update {sorted(unknown | ({'id'} & set(changes)))}")


class SQLAccounts:
    """The ``AccountStore`` methods both SQL stores share: reading tenants and keys, and
    updating them. A store supplies its dialect, the order keys are listed in, ``_select``
    (rows as dicts, decoded) and ``_update`` (the updated row, the auth epoch bumped); it
    writes ``create_tenant``, ``create_key`` and ``auth_epoch`` itself."""

    dialect: ClassVar[Dialect]
    key_order: ClassVar[str]

    _select: Callable[..., Awaitable[list[dict[str, Any]]]]  # (table, cols, where, params, order)
    _update: Callable[..., Awaitable[dict[str, Any]]]  # (table, cols, row_id, changes, what)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        rows = await self._select("tenants", TENANT_COLS, self._by("id"), (tenant_id,))
        return Tenant(**rows[0]) if rows else None

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._select("tenants", TENANT_COLS, self.dialect.true, (), "id")
        return [Tenant(**r) for r in rows]

    async def update_tenant(self, tenant_id: str, changes: dict[str, Any]) -> Tenant:
        return Tenant(**await self._update("tenants", TENANT_COLS, tenant_id, changes, "tenant"))

    async def get_key(self, key_id: str) -> ApiKey | None:
        rows = await self._select("api_keys", KEY_COLS, self._by("id"), (key_id,))
        return ApiKey(**rows[0]) if rows else None

    async def get_key_by_hash(self, key_hash: str) -> ApiKey | None:
        rows = await self._select("api_keys", KEY_COLS, self._by("key_hash"), (key_hash,))
        return ApiKey(**rows[0]) if rows else None

    async def list_keys(self, tenant_id: str | None, kind: str | None = None) -> list[ApiKey]:
        where, params = self.dialect.where((("tenant_id = ", tenant_id), ("kind = ", kind)))
        rows = await self._select("api_keys", KEY_COLS, where, params, self.key_order)
        return [ApiKey(**r) for r in rows]

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        return ApiKey(**await self._update("api_keys", KEY_COLS, key_id, changes, "key"))

    def _by(self, col: str) -> str:
        return f"{col} = {self.dialect.mark(1)}"
