"""The GraphQL types both schemas (admin and tenant) share.

Money is an exact decimal string in USD (``"0.000125"``), never a float. Counts are ``BigInt``
(a JSON integer of any size: a month of tokens passes GraphQL's 32-bit ``Int``). Times are
ISO 8601 strings with their offset; a series bucket is given in the query's time zone.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NewType

import strawberry
from strawberry.scalars import JSON
from strawberry.types.scalar import ScalarDefinition


def _big_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("BigInt must be an integer")
    return value


BigInt = NewType("BigInt", int)


def scalars() -> dict[object, ScalarDefinition]:
    """The schema's scalar map: ``BigInt`` as a GraphQL scalar."""
    big = strawberry.scalar(
        name="BigInt",
        description="An integer of any size (counts of requests and tokens).",
        serialize=int,
        parse_value=_big_int,
    )
    return {BigInt: big}


@strawberry.enum(description="The width of a series bucket, in the query's time zone.")
class Bucket(Enum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"
    ALL = "all"


@strawberry.enum(description="What a series is grouped by.")
class GroupBy(Enum):
    TENANT = "tenant"
    PLAN = "plan"
    MODEL = "model"
    FEATURE = "feature"
    USER = "user"
    KEY = "key"
    STATUS = "status"
    TAG = "tag"


@strawberry.enum(description="What top spenders are ranked by.")
class RankBy(Enum):
    COST = "cost"
    REVENUE = "revenue"


@strawberry.enum
class IncidentStatus(Enum):
    OPEN = "open"
    RESOLVED = "resolved"


@strawberry.input(description="Exact filters of a series (each optional).")
class SeriesFilter:
    key: str | None = None
    model: str | None = None
    feature: str | None = None
    status: str | None = None


@strawberry.input(description="One metadata tag: its name and value.")
class TagInput:
    name: str
    value: str


@strawberry.input(description="Exact filters of the request log (each optional).")
class RequestFilter:
    start: str | None = strawberry.field(default=None, description="From (inclusive).")
    end: str | None = strawberry.field(default=None, description="To (exclusive).")
    status: str | None = None
    key: str | None = None
    user: str | None = None
    feature: str | None = None
    model: str | None = None
    cache: str | None = strawberry.field(
        default=None,
        description="How the response cache took it: hit-exact, hit-semantic, miss or bypass.",
    )
    tag: TagInput | None = None


@strawberry.type
class Tokens:
    input: BigInt
    cached: BigInt
    cache_write: BigInt
    output: BigInt
    reasoning: BigInt


@strawberry.type(description="One bucket of a series, for one group.")
class SeriesPoint:
    bucket: str = strawberry.field(description="The bucket's start, ISO 8601 in the zone asked.")
    bucket_unix: float
    group: str | None
    requests: BigInt
    errors: BigInt
    tokens: Tokens
    cost_usd: str
    revenue_usd: str
    margin_usd: str
    saved_usd: str = strawberry.field(description="What the response cache saved.")
    cache_misses: BigInt = strawberry.field(description="Response cache lookups that missed.")


@strawberry.type
class Budget:
    scope: str
    period: str
    name: str | None
    limit_usd: str
    used_usd: str
    reserved_usd: str
    remaining_usd: str
    resets_at: str | None


@strawberry.type
class TopSpender:
    tenant: str
    plan: str | None
    amount_usd: str = strawberry.field(description="The ranked measure (cost or revenue).")
    share_percent: str | None = strawberry.field(
        description="Of every tenant's total, exact, 2 decimals; null when the total is 0."
    )
    requests: BigInt
    cost_usd: str
    revenue_usd: str
    margin_usd: str


@strawberry.type
class TopSpenders:
    by: RankBy
    total_usd: str
    tenants: int = strawberry.field(description="Tenants with traffic in the period.")
    rows: list[TopSpender]


@strawberry.type
class Anomaly:
    id: str
    status: IncidentStatus
    summary: str
    tenant: str
    key: str | None
    metric: str
    unit: str
    observed_per_hour: str
    baseline_per_hour: str
    threshold_per_hour: str
    action: str
    paused_key: str | None
    opened_at: float
    resolved_at: float | None


@strawberry.type
class Deployment:
    deployment: str
    provider: str
    model: str
    weight: float
    aliases: list[str]
    state: str
    open_until: float | None
    successes: BigInt
    failures: BigInt
    failure_streak: BigInt


@strawberry.type
class Tenant:
    id: str
    name: str
    plan: str
    paused: bool
    pause_reason: str | None
    created_at: float
    metadata: JSON


@strawberry.type(description="An API key as listed: never its secret.")
class Key:
    id: str
    kind: str
    name: str
    tenant: str | None
    prefix: str
    created_at: float
    expires_at: float | None
    revoked: bool
    paused: bool
    pause_reason: str | None


@strawberry.type(description="One request of the request log (as GET /admin/v1/requests).")
class Request:
    time: str = strawberry.field(description="When it started, ISO 8601 in UTC.")
    started_at: float
    request_id: str
    tenant: str
    key_id: str
    user: str | None
    feature: str | None
    endpoint: str
    model_requested: str
    model_served: str
    provider: str
    status: str
    http_status: int
    error_code: str | None
    stream: bool
    tokens: Tokens
    cost_usd: str
    revenue_usd: str
    cache: str | None = strawberry.field(
        description="How the response cache took it: hit-exact, hit-semantic, miss, bypass."
    )
    saved_usd: str = strawberry.field(description="A cache hit's original request's cost.")
    latency_ms: float
    ttft_ms: float | None
    upstream_ms: float
    metadata: JSON


@strawberry.type(description="A page of the request log, newest first.")
class RequestPage:
    nodes: list[Request]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next (older) page; null: no more."
    )


@strawberry.type(description="A tenant's response cache (as GET /admin/v1/tenants/{id}/cache).")
class CacheStats:
    tenant: str
    entries: BigInt | None = strawberry.field(
        description="Entries held now (null: the cache's backend did not answer)."
    )
    bytes: BigInt | None = strawberry.field(description="Bytes held now (null: as entries).")
    hits: BigInt = strawberry.field(description="Exact and semantic hits in the period.")
    misses: BigInt
    hit_rate: str | None = strawberry.field(
        description="hits / (hits + misses), a decimal string to 4 places; null: no lookups."
    )
    saved_usd: str = strawberry.field(description="What the hits' original requests cost.")
    since: str = strawberry.field(description="The period's start, ISO 8601 UTC, whole hours.")
    until: str = strawberry.field(description="The period's end (exclusive).")
