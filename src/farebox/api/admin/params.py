"""What the admin operations share: the tenant filter, the strict body base, the pause body and
the time parameters, with the formats the document states."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends
from pydantic import BaseModel, ConfigDict, Field

from farebox.api.admin.access import scoped_tenant, scoped_tenant_id
from farebox.errors import InvalidRequest

# a tenant id, as the tenant's own pattern says; a tenant_admin's own, whatever it asks
# (``farebox.api.admin.access.scoped_tenant``): every tenant filter of the API is one of these
TenantFilter = Annotated[str | None, Depends(scoped_tenant)]
TenantIdFilter = Annotated[str | None, Depends(scoped_tenant_id)]  # ``/series``


class AdminBody(BaseModel):
    """A request body of the admin API: unknown fields, non-finite numbers and values of the
    wrong JSON type (``true`` for a number, ``"5"`` for an integer) are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class PauseBody(AdminBody):
    reason: str | None = Field(None, max_length=1000)


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds, an ISO date, or an ISO date-time (UTC when no zone is given)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"'{name}' must be unix seconds or an ISO 8601 date/time (got {value!r}).", param=name
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def finite_time(value: str | None, name: str) -> float | None:
    """``parse_time``, refusing a moment beyond what unix seconds can say (400 naming it)."""
    try:
        moment = parse_time(value, name)
    except (OverflowError, ValueError):  # a date beyond what unix seconds can say
        moment = math.inf
    if moment is not None and not math.isfinite(moment):
        raise InvalidRequest(f"'{name}' must be a finite time (got {value!r}).", param=name)
    return moment


def reject_unknown(values: Mapping[str, object], allowed: Sequence[str]) -> None:
    """Refuse a query parameter that is not one of ``allowed`` (the first, sorted, is named)."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InvalidRequest(
            f"Unknown query parameter {unknown[0]!r:.80}; this operation takes: "
            f"{', '.join(allowed)}.",
            param=unknown[0][:80],
        )
