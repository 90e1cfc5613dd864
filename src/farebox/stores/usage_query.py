"""The usage query (``UsageStore.usage``) in SQL: one statement per dialect, built alike.

Both group, filter and sum the ledger the same way; they differ in how a UTC day or hour is
formatted, how ``user`` is quoted, and how groups are ordered (SQLite sorts text bytewise by
default; PostgreSQL is told to). Every sum comes back as an exact ``int``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from farebox.core.records import GROUP_BY, UsageQuery, UsageRow
from farebox.errors import InvalidRequest
from farebox.stores.sql import POSTGRES, SQLITE, Dialect

_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "tenant": "tenant_id",
        "model": "model_served",
        "feature": "feature",
        "key": "key_id",
        "provider": "provider",
        "status": "status",
        "workspace": "workspace",  # issue 14: the rollups do not keep it, the entries do
    }
)
_UTC_SECOND = "to_timestamp(floor(started_at)) AT TIME ZONE 'UTC'"


@dataclass(frozen=True, slots=True)
class UsageSQL:
    dialect: Dialect
    groups: Mapping[str, str]  # group_by -> the expression of its group
    no_group: str  # the group expression without a group_by
    template: str  # the statement, with {group}, {ledger} and {where}

    def statement(self, query: UsageQuery, ledger: str) -> tuple[str, list[Any]]:
        """The statement over the table ``ledger``, and its parameters."""
        if query.group_by is not None and query.group_by not in GROUP_BY:
            raise InvalidRequest(f"group_by must be one of {', '.join(GROUP_BY)}", param="group_by")
        group = self.groups[query.group_by] if query.group_by else self.no_group
        where, params = self.dialect.where(
            (
                ("tenant_id = ", query.tenant_id),
                ("started_at >= ", query.start),
                ("started_at < ", query.end),
            )
        )
        return self.template.format(group=group, ledger=ledger, where=where), params


SQLITE_USAGE = UsageSQL(
    SQLITE,
    MappingProxyType(
        {
            **_COLUMNS,
            "user": "user",
            "day": "strftime('%Y-%m-%d', started_at, 'unixepoch')",
            "hour": "strftime('%Y-%m-%dT%H:00:00Z', started_at, 'unixepoch')",
        }
    ),
    "NULL",
    "SELECT {group} AS g, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost), "
    "SUM(revenue) FROM {ledger} WHERE {where} GROUP BY g ORDER BY g IS NULL, g",
)
POSTGRES_USAGE = UsageSQL(
    POSTGRES,
    MappingProxyType(
        {
            **_COLUMNS,
            "user": '"user"',
            "day": f"to_char({_UTC_SECOND}, 'YYYY-MM-DD')",
            "hour": f'to_char({_UTC_SECOND}, \'YYYY-MM-DD"T"HH24":00:00Z"\')',
        }
    ),
    "NULL::text",
    "SELECT g, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost), SUM(revenue) "
    "FROM (SELECT {group} AS g, input_tokens, output_tokens, cost, revenue "
    "FROM {ledger} WHERE {where}) AS rows "
    'GROUP BY g ORDER BY g COLLATE "C" NULLS LAST',
)


def exact(value: Any) -> int:
    """A count or exact sum (``Decimal`` for NUMERIC and SUM(BIGINT)) as an ``int``; the sum
    of no rows (NULL) is 0."""
    if value is None:
        return 0
    if isinstance(value, Decimal) and value != value.to_integral_value():
        raise ValueError(f"non-integral sum {value}")
    return int(value)


def usage_rows(rows: Iterable[Sequence[Any]]) -> list[UsageRow]:
    """The statement's rows: the group, then the five sums."""
    return [UsageRow(r[0], *(exact(v) for v in tuple(r)[1:])) for r in rows]
