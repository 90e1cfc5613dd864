"""The columns of a stored Responses API answer, shared by the SQL stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from farebox.core.records import StoredResponse

RESPONSE_COLS = ("id", "tenant_id", "model", "input", "output", "usage", "details",
                 "created_at", "expires_at")  # fmt: skip
JSON_COLS = ("input", "output", "usage", "details")


def response_values(stored: StoredResponse) -> list[Any]:
    return [getattr(stored, name) for name in RESPONSE_COLS]


def response_from(row: Sequence[Any]) -> StoredResponse:
    return StoredResponse(**dict(zip(RESPONSE_COLS, row, strict=True)))
