"""From the records and the admin API's JSON objects to the GraphQL types: the same data the
REST answers hold, field for field (money as exact decimal strings)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from strawberry.scalars import JSON

from farebox.api.graphql import types as t
from farebox.core import records
from farebox.core.money import format_usd
from farebox.observe import reports


def iso(ts: float, zone: tzinfo = UTC) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat()


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
    )


def request(row: dict[str, Any]) -> t.Request:
    """From ``entry_json``'s row (as ``/admin/v1/requests`` shows it)."""
    tokens = row["tokens"]
    return t.Request(
        time=row["time"],
        started_at=row["started_at"],
        request_id=row["request_id"],
        tenant=row["tenant"],
        key_id=row["key_id"],
        user=row["user"],
        feature=row["feature"],
        endpoint=row["endpoint"],
        model_requested=row["model_requested"],
        model_served=row["model_served"],
        provider=row["provider"],
        status=row["status"],
        http_status=row["http_status"],
        error_code=row["error_code"],
        stream=row["stream"],
        tokens=t.Tokens(
            input=t.BigInt(tokens["input"]),
            cached=t.BigInt(tokens["cached"]),
            cache_write=t.BigInt(tokens["cache_write"]),
            output=t.BigInt(tokens["output"]),
            reasoning=t.BigInt(tokens["reasoning"]),
        ),
        cost_usd=row["cost_usd"],
        revenue_usd=row["revenue_usd"],
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        upstream_ms=row["upstream_ms"],
        metadata=JSON(row["metadata"]),
    )


def budget(b: dict[str, Any]) -> t.Budget:
    """From ``state_json``'s budget object (as ``/admin/v1/tenants/{id}/budgets`` shows it)."""
    return t.Budget(
        scope=b["scope"],
        period=b["period"],
        name=b["name"],
        limit_usd=b["limit_usd"],
        used_usd=b["used_usd"],
        reserved_usd=b["reserved_usd"],
        remaining_usd=b["remaining_usd"],
        resets_at=b["resets_at"],
    )


def anomaly(a: dict[str, Any]) -> t.Anomaly:
    """From ``incident_json`` (as ``/admin/v1/anomalies`` shows it)."""
    return t.Anomaly(
        id=a["id"],
        status=t.IncidentStatus(a["status"]),
        summary=a["summary"],
        tenant=a["tenant"],
        key=a["key"],
        metric=a["metric"],
        unit=a["unit"],
        observed_per_hour=str(a["observed_per_hour"]),
        baseline_per_hour=str(a["baseline_per_hour"]),
        threshold_per_hour=str(a["threshold_per_hour"]),
        action=a["action"],
        paused_key=a["paused_key"],
        opened_at=a["opened_at"],
        resolved_at=a["resolved_at"],
    )


def deployment(d: dict[str, Any]) -> t.Deployment:
    """From a row of ``/admin/v1/deployments``."""
    return t.Deployment(
        deployment=d["deployment"],
        provider=d["provider"],
        model=d["model"],
        weight=float(d["weight"]),
        aliases=list(d["aliases"]),
        state=d["state"],
        open_until=d["open_until"],
        successes=t.BigInt(d["successes"]),
        failures=t.BigInt(d["failures"]),
        failure_streak=t.BigInt(d["failure_streak"]),
    )


def tenant(x: records.Tenant) -> t.Tenant:
    return t.Tenant(
        id=x.id,
        name=x.name,
        plan=x.plan,
        paused=x.paused,
        pause_reason=x.pause_reason,
        created_at=x.created_at,
        metadata=JSON(x.metadata),
    )


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
