"""Query parameters the admin operations share, with the formats the document states."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from farebox.identity.tenancy import TENANT_ID

TenantFilter = Annotated[
    str | None, Query(min_length=1, max_length=64, pattern=TENANT_ID.pattern)
]  # a tenant id, as the tenant's own pattern says
