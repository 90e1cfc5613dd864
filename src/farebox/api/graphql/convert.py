"""From the records and the admin API's JSON objects to the GraphQL types: the same data the
REST answers hold, field for field (money as exact decimal strings)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from functools import partial
from typing import Any, TypeVar, cast

from strawberry.scalars import JSON

from farebox.api.graphql import types as t
from farebox.core import records
from farebox.core.money import format_usd
from farebox.observe import reports

T = TypeVar("T")


def iso(ts: float, zone: tzinfo = UTC) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat()


def same_names(cls: type[T], get: Callable[[str], Any], **changed: Any) -> T:
    """A ``cls`` whose every field is ``get(its name)``, but those ``changed`` gives (the
    REST objects and the records hold the GraphQL type's fields under the same names)."""
    names = [f.name for f in dataclasses.fields(cast(Any, cls)) if f.name not in changed]
    return cls(**{n: get(n) for n in names}, **changed)


def tokens_of(p: records.SeriesPoint) -> t.Tokens:
    return t.Tokens(
        input=t.BigInt(p.input_tokens),
        cached=t.BigInt(p.cached_input_tokens),
        cache_write=t.BigInt(p.cache_write_tokens),
        output=t.BigInt(p.output_tokens),
        reasoning=t.BigInt(p.reasoning_tokens),
    )


def point(p: records.SeriesPoint, zone: tzinfo) -> t.SeriesPoint:
    return t.SeriesPoint(
        bucket=iso(p.bucket, zone),
        bucket_unix=p.bucket,
        group=p.group,
        requests=t.BigInt(p.requests),
        errors=t.BigInt(p.errors),
        tokens=tokens_of(p),
        cost_usd=format_usd(p.cost),
        revenue_usd=format_usd(p.revenue),
        margin_usd=format_usd(p.margin),
        saved_usd=format_usd(p.saved),
        cache_misses=t.BigInt(p.cache_misses),
    )


def request(row: dict[str, Any]) -> t.Request:
    """From ``entry_json``'s row (as ``/admin/v1/requests`` shows it)."""
    tokens = same_names(t.Tokens, row["tokens"].__getitem__)
    return same_names(t.Request, row.__getitem__, tokens=tokens, metadata=JSON(row["metadata"]),
                      cache=row.get("cache"))  # fmt: skip


def cache_stats(row: dict[str, Any]) -> t.CacheStats:
    """From ``admin.cache.stats_json`` (as ``/admin/v1/tenants/{id}/cache`` shows it)."""
    return same_names(t.CacheStats, row.__getitem__)


def budget(b: dict[str, Any]) -> t.Budget:
    """From ``state_json``'s budget object (as ``/admin/v1/tenants/{id}/budgets`` shows it)."""
    return same_names(t.Budget, b.__getitem__)


def anomaly(a: dict[str, Any]) -> t.Anomaly:
    """From ``incident_json`` (as ``/admin/v1/anomalies`` shows it)."""
    rates = {n: str(a[n]) for n in ("observed_per_hour", "baseline_per_hour", "threshold_per_hour")}
    return same_names(t.Anomaly, a.__getitem__, status=t.IncidentStatus(a["status"]), **rates)


def deployment(d: dict[str, Any]) -> t.Deployment:
    """From a row of ``/admin/v1/deployments``."""
    return same_names(
        t.Deployment, d.__getitem__, weight=float(d["weight"]), aliases=list(d["aliases"])
    )


def tenant(x: records.Tenant) -> t.Tenant:
    return same_names(t.Tenant, partial(getattr, x), metadata=JSON(x.metadata))


def key(k: records.ApiKey) -> t.Key:
    """A key's listing: never its hash, never its secret."""
    return t.Key(
        id=k.id,
        kind=k.kind,
        name=k.name,
        tenant=k.tenant_id,
        prefix=k.prefix,
        created_at=k.created_at,
        expires_at=k.expires_at,
        revoked=k.revoked_at is not None,
        paused=k.paused,
        pause_reason=k.pause_reason,
    )


def top(found: reports.TopSpenders, plans: Mapping[str, str]) -> t.TopSpenders:
    """From the report service's ranking (as ``/admin/v1/top-spenders`` shows it)."""
    rows = [
        t.TopSpender(
            tenant=s.tenant,
            plan=plans.get(s.tenant),
            amount_usd=format_usd(s.amount),
            share_percent=s.share_percent,
            requests=t.BigInt(s.requests),
            cost_usd=format_usd(s.cost),
            revenue_usd=format_usd(s.revenue),
            margin_usd=format_usd(s.revenue - s.cost),
        )
        for s in found.data
    ]
    by = t.RankBy(found.by)
    return t.TopSpenders(by=by, total_usd=format_usd(found.total), tenants=found.tenants, rows=rows)
