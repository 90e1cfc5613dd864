"""The response cache, seen and operated: ``GET /admin/v1/tenants/{id}/cache`` (what the
tenant's cache holds, and its hits, misses, hit rate and USD saved over a period),
``GET /admin/v1/cache`` (the same for every tenant with cache traffic or entries) and
``DELETE /admin/v1/tenants/{id}/cache`` (erase all the tenant's entries, or one namespace's:
a tenant's right to erasure).

The traffic numbers are the ledger's (``ReportStore.cache_tallies``, exact); the entries and
bytes are the cache store's now (``CacheStore.usage``; 0 when the cache is off or not
configured, null when its backend does not answer). ``/v1/me``, GraphQL and the dashboard
answer with ``cache_stats``, so every view says the same numbers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Query
from pydantic import BaseModel, Field

from farebox.api.admin.params import parse_time
from farebox.api.context import Services
from farebox.core.cache import MAX_NAMESPACE_CHARS, CacheTally, CacheUsage
from farebox.core.money import format_usd
from farebox.core.periods import Period, iso_utc, window
from farebox.errors import CacheUnavailable, InvalidRequest
from farebox.identity.tenancy import Tenancy
from farebox.stores.base import CacheStore, ReportStore

HOUR = 3600
MAX_UNIX = 253_402_300_799.0  # 9999-12-31T23:59:59Z
RATE_PLACES = 4  # the hit rate's decimal places ("0.4000")
UTC_ZONE = ZoneInfo("UTC")
USAGE_BATCH = 32  # tenants whose cache usage is asked at once (each one a Redis call)

Time = Annotated[
    str | None,
    Query(max_length=64, description="unix seconds or ISO 8601 (UTC when no zone is given)"),
]
Namespace = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_NAMESPACE_CHARS,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Only this namespace (the client's X-Farebox-Cache-Namespace, as sent).",
    ),
]


class CacheStats(BaseModel):
    """One tenant's cache: what it holds now, and its traffic over ``[since, until)``."""

    tenant: str
    entries: int | None = Field(description="Entries held now (null: the backend is down).")
    bytes: int | None = Field(description="Bytes held now (null: the backend is down).")
    hits: int = Field(description="Exact and semantic hits in the period (the ledger's).")
    misses: int = Field(description="Lookups that missed in the period.")
    hit_rate: str | None = Field(
        description="hits / (hits + misses) as a decimal string to 4 places; null: no lookups.",
        examples=["0.4000"],
    )
    saved_usd: str = Field(description="What the hits' original requests cost, exact USD.")
    since: str = Field(description="The period's start (ISO 8601, UTC, whole hours).")
    until: str = Field(description="The period's end, exclusive.")


class CacheList(BaseModel):
    object: str = "list"
    since: str
    until: str
    data: list[CacheStats]


class CachePurged(BaseModel):
    purged: int = Field(description="How many entries were erased.")


def hit_rate(hits: int, lookups: int) -> str | None:
    """``hits / lookups`` to ``RATE_PLACES`` places, rounded half up in integers; None when
    there were no lookups."""
    if lookups <= 0:
        return None
    scale = 10**RATE_PLACES
    units = (hits * scale * 2 + lookups) // (lookups * 2)
    whole, frac = divmod(units, scale)
    return f"{whole}.{frac:0{RATE_PLACES}d}"


def _moment(value: str | None, name: str) -> float | None:
    try:
        moment = parse_time(value, name)
    except (OverflowError, ValueError):  # a date beyond what unix seconds can say
        moment = math.inf
    if moment is not None and not 0 <= moment <= MAX_UNIX:  # also NaN and infinities
        raise InvalidRequest(
            f"'{name}' must be a time from 1970 to 9999 (got {value!r:.80}).", param=name
        )
    return moment


def period(since: str | None, until: str | None, now: float) -> tuple[float, float]:
    """``[since, until)`` as asked (default: this UTC month), widened to whole hours (what
    the ledger's hourly rollups answer exactly)."""
    lo, hi = _moment(since, "since"), _moment(until, "until")
    month = window(Period("month"), now, UTC_ZONE)
    lo = month.start if lo is None else lo
    hi = month.end if hi is None else hi
    lo, hi = float(math.floor(lo / HOUR) * HOUR), float(math.ceil(hi / HOUR) * HOUR)
    if hi <= lo:
        raise InvalidRequest("'until' must be after 'since'.", param="until")
    return lo, hi


async def held(cache: CacheStore | None, tenant_id: str) -> CacheUsage | None:
    """What ``tenant_id``'s cache holds now: zeros with no cache, None when it is down."""
    if cache is None:
        return CacheUsage(0, 0)
    try:
        return await cache.usage(tenant_id)
    except CacheUnavailable:
        return None


def stats_json(
    tenant_id: str, tally: CacheTally | None, usage: CacheUsage | None, span: tuple[float, float]
) -> dict[str, Any]:
    """One tenant's numbers, as every view answers them."""
    hits, misses, saved = (tally.hits, tally.misses, tally.saved) if tally else (0, 0, 0)
    return {
        "tenant": tenant_id,
        "entries": usage.entries if usage else None,
        "bytes": usage.bytes if usage else None,
        "hits": hits,
        "misses": misses,
        "hit_rate": hit_rate(hits, hits + misses),
        "saved_usd": format_usd(saved),
        "since": iso_utc(span[0]),
        "until": iso_utc(span[1]),
    }


async def cache_stats(
    reports: ReportStore, cache: CacheStore | None, tenant_id: str, span: tuple[float, float]
) -> dict[str, Any]:
    """One tenant's cache stats over ``span`` (as ``period`` made it)."""
    tallies, usage = await asyncio.gather(
        reports.cache_tallies(tenant_id, span[0], span[1]), held(cache, tenant_id)
    )
    tally = next((t for t in tallies if t.tenant_id == tenant_id), None)
    return stats_json(tenant_id, tally, usage, span)


async def every_tenant(
    reports: ReportStore, cache: CacheStore | None, tenants: list[str], span: tuple[float, float]
) -> list[dict[str, Any]]:
    """Every tenant of ``tenants`` with lookups in ``span`` or entries now, by tenant id."""
    tallies = {t.tenant_id: t for t in await reports.cache_tallies(None, span[0], span[1])}
    held_now: list[CacheUsage | None] = []
    for at in range(0, len(tenants), USAGE_BATCH):  # a bounded number of backend calls at once
        batch = tenants[at : at + USAGE_BATCH]
        held_now += await asyncio.gather(*(held(cache, t) for t in batch))
    rows = []
    for tenant_id, usage in sorted(zip(tenants, held_now, strict=True), key=lambda p: p[0]):
        tally = tallies.get(tenant_id)
        if tally is None and usage is not None and usage.entries == 0:
            continue
        rows.append(stats_json(tenant_id, tally, usage, span))
    return rows


class CacheRoutes:
    """The handlers of ``/tenants/{tenant_id}/cache`` and ``/cache``."""

    def __init__(
        self, services: Services, tenancy: Tenancy, clock: Callable[[], float] | None = None
    ) -> None:
        self.services = services
        self.tenancy = tenancy
        self.clock = clock or tenancy.now

    async def tenant_cache(
        self, tenant_id: str, since: Time = None, until: Time = None
    ) -> CacheStats:
        """The tenant's cache: entries and bytes held now; hits, misses, hit rate and USD
        saved over ``[since, until)`` (default: this UTC month; widened to whole hours)."""
        span = period(since, until, self.clock())
        await self.tenancy.tenant(tenant_id)  # 404 for an unknown tenant
        found = await cache_stats(self.services.store, self.services.cache, tenant_id, span)
        return CacheStats(**found)

    async def all_caches(self, since: Time = None, until: Time = None) -> CacheList:
        """Every tenant with cache lookups in the period or entries now, by tenant id."""
        span = period(since, until, self.clock())
        tenants = [t.id for t in await self.tenancy.list_tenants()]
        rows = await every_tenant(self.services.store, self.services.cache, tenants, span)
        return CacheList(
            since=iso_utc(span[0]), until=iso_utc(span[1]), data=[CacheStats(**r) for r in rows]
        )

    async def purge_cache(self, tenant_id: str, namespace: Namespace = None) -> CachePurged:
        """Erase the tenant's cached answers: all of them, or one namespace's."""
        await self.tenancy.tenant(tenant_id)
        cache = self.services.cache
        if cache is None:
            return CachePurged(purged=0)
        return CachePurged(purged=await cache.purge(tenant_id, namespace))


def month_span(now: float | None = None) -> tuple[float, float]:
    """This UTC month (the default period of every cache view)."""
    return period(None, None, time.time() if now is None else now)
