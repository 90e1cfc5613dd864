"""What the two SQL stores (SQLite and PostgreSQL) share: the columns of the tables that hold
records, filters written in either placeholder style, and the check on an update's changes.

The statements themselves stay with each store; only the text they build alike is here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from farebox.core.records import LedgerEntry

TENANT_COLS = (
    "id", "name", "plan", "created_at", "paused", "pause_reason", "billing", "metadata", "budgets",
    "rate_limits",
)  # fmt: skip
KEY_COLS = (
    "id", "key_hash", "kind", "name", "created_at", "tenant_id", "prefix", "expires_at",
    "revoked_at", "paused", "pause_reason", "budgets", "rate_limits",
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
