"""Records shared by the stores and the request path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from farebox.core.budgets import Hold, HoldState, held_amount

KeyKind = Literal["tenant", "service", "admin"]
# an admin key's role (issue 14): what it may do through the admin API, GraphQL and dashboard
AdminRole = Literal["owner", "operator", "billing", "viewer", "tenant_admin"]
ADMIN_ROLES: tuple[str, ...] = ("owner", "operator", "billing", "viewer", "tenant_admin")
DEFAULT_WORKSPACE = "default"  # every tenant has it; keys made before workspaces belong to it
# the status of a ledger-free reservation's placeholder entry (a token count): it only ever
# settles counters, and never reaches the ledger, not even when its lease expires
LEDGER_FREE = "ledger_free"
GROUP_BY = ("tenant", "model", "feature", "user", "day", "hour", "key", "provider", "status",
            "workspace")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    plan: str
    created_at: float
    paused: bool = False
    pause_reason: str | None = None
    billing: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    budgets: list[dict[str, Any]] = field(default_factory=list)  # overrides of the plan's
    rate_limits: list[dict[str, Any]] = field(default_factory=list)  # overrides of the plan's


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    key_hash: str
    kind: KeyKind
    name: str
    created_at: float
    tenant_id: str | None = None
    prefix: str = ""
    expires_at: float | None = None
    revoked_at: float | None = None
    paused: bool = False
    pause_reason: str | None = None
    budgets: list[dict[str, Any]] = field(default_factory=list)
    rate_limits: list[dict[str, Any]] = field(default_factory=list)
    workspace_id: str = DEFAULT_WORKSPACE  # the tenant's workspace the key belongs to
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. user_email, team
    alert_threshold: int | None = None  # percent of the key's budget that fires its alert
    role: str | None = None  # an admin key's role (``AdminRole``); its tenant: tenant_id

    def usable_at(self, now: float) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(slots=True)  # not frozen: built several times per request, and frozen init is slow
class LedgerEntry:
    """One request, metered. Money in pico-USD. Its token counts are ``core.usage.TOKEN_FIELDS``
    (``usage_of(entry)`` reads them as a ``Usage``)."""

    request_id: str
    tenant_id: str
    key_id: str
    endpoint: str
    model_requested: str
    model_served: str
    provider: str
    status: str
    http_status: int
    started_at: float
    finished_at: float
    user: str | None = None
    feature: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost: int = 0
    revenue: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    upstream_ms: float = 0.0
    usage_source: str = "provider"
    error_code: str | None = None
    reservation_id: str | None = None
    # the response cache: hit-exact | hit-semantic | miss | bypass (None: the plan caches
    # nothing); ``saved``: what a hit's original request cost, pico-USD (0 otherwise)
    cache: str | None = None
    saved: int = 0
    workspace: str | None = None  # the key's workspace (issue 14)
    byok: bool = False  # served on the tenant's own provider key: cost 0 to the platform
    # issue 15: what the guardrails found (``core.guardrails.Finding.json``: detector,
    # category, action, score, where; never the matched text)
    guardrails: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """What a tokens-per-minute limit counts: the whole prompt plus the output."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Workspace:
    """A tenant's team or project: its keys, budgets and rate limits (overriding the
    tenant's, as the tenant's override the plan's)."""

    tenant_id: str
    id: str
    name: str
    created_at: float
    budgets: list[dict[str, Any]] = field(default_factory=list)
    rate_limits: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UsageRow:
    group: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost: int
    revenue: int


@dataclass(frozen=True, slots=True)
class UsageQuery:
    tenant_id: str | None = None
    start: float | None = None
    end: float | None = None
    group_by: str | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """A worst-case hold against budget counters, leased until ``expires_at``.

    ``unsettled`` is the ledger entry written if the lease expires before settlement: the
    upstream call may have been billed, so it stays visible for reconciliation. A
    ``ledger_free`` reservation (its entry's status is ``LEDGER_FREE``: a token count, which
    nothing bills) is settled by ``ReservationStore.settle_counters`` and released unrecorded
    when its lease expires.
    """

    id: str
    amount: int  # pico-USD, held against every ``usd`` hold
    holds: tuple[Hold, ...]
    expires_at: float
    unsettled: LedgerEntry
    tokens: int = 0  # the token estimate, held against every ``tokens`` hold
    revenue: int = 0  # the worst-case revenue, pico-USD, held against every ``revenue`` hold

    def held(self, hold: Hold) -> int:
        """What this reservation holds against one counter, in that counter's unit."""
        return held_amount(hold.unit, self.amount, self.tokens, self.revenue)

    @property
    def ledger_free(self) -> bool:
        return self.unsettled.status == LEDGER_FREE


def ledgered(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """The placeholders of expired leases that go to the ledger: all but ledger-free ones."""
    return [e for e in entries if e.status != LEDGER_FREE]


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    ok: bool
    states: list[HoldState]  # after the reservation when ok; as found when not
    failed: HoldState | None = None


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Responses API answer kept so that ``previous_response_id`` can continue it. ``input``:
    the items as the client sent them, the history already prepended; ``output``: the answer's
    items; ``details``: the rest of the Responses object (status, instructions, metadata...).
    It belongs to ``tenant_id`` alone and is gone at ``expires_at``."""

    id: str
    tenant_id: str
    model: str
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]
    usage: dict[str, Any]
    created_at: float
    expires_at: float
    details: dict[str, Any] = field(default_factory=dict)

    def live_at(self, now: float) -> bool:
        return now < self.expires_at


# reports (rollups and the request log) -------------------------------------------------------
# what a rollup row is keyed by, besides its hour; ``series`` may group by these and by time
ROLLUP_DIMENSIONS = ("tenant", "key", "model", "feature", "status")
# the latency histogram's upper bounds in milliseconds (the last bucket is +inf); rollups keep
# one count per bucket, so a percentile over any range is read from sums, never from entries
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """Sums of the ledger over ``[start, end)`` (unix seconds, started_at), in ``bucket``
    buckets (``hour``, ``day``, ``month``, or ``all``: one bucket for the whole range) of the
    wall clock of ``tz`` (an IANA name), grouped by ``group_by`` (one of
    ``ROLLUP_DIMENSIONS``, or None). ``tenant_id`` None: every tenant (admin only)."""

    start: float
    end: float
    bucket: Literal["hour", "day", "month", "all"] = "day"
    tz: str = "UTC"
    group_by: str | None = None
    tenant_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    feature: str | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One bucket (and group) of a series. ``bucket``: the bucket's start in unix seconds
    (``start`` of the query for ``all``). Money (cost, revenue, saved) in pico-USD; latency
    sums in milliseconds, ``latency_buckets`` one count per ``LATENCY_BOUNDS_MS`` bound plus
    the +inf bucket."""

    bucket: float
    group: str | None
    requests: int = 0
    errors: int = 0  # entries whose http_status is 400 or above
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0  # 5-minute and 1-hour cache writes together
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost: int = 0
    revenue: int = 0
    latency_ms_sum: float = 0.0
    upstream_ms_sum: float = 0.0
    latency_buckets: tuple[int, ...] = ()
    saved: int = 0  # what the cache's hits saved (their original requests' cost)
    cache_misses: int = 0  # entries the response cache missed (hits: status ``cache_hit``)

    @property
    def margin(self) -> int:
        return self.revenue - self.cost


@dataclass(frozen=True, slots=True)
class RequestQuery:
    """A page of the request log, newest first. Every filter is exact; ``tag`` is one
    metadata ``(name, value)`` pair. ``cursor``: the opaque ``next_cursor`` of the page
    before. ``limit`` is capped by the store's caller (the API), not here."""

    tenant_id: str | None = None
    start: float | None = None
    end: float | None = None
    status: str | None = None
    key_id: str | None = None
    user: str | None = None
    feature: str | None = None
    model: str | None = None
    cache: str | None = None  # the entry's ``cache``: hit-exact | hit-semantic | miss | bypass
    tag: tuple[str, str] | None = None
    cursor: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class RequestPage:
    entries: list[LedgerEntry]
    next_cursor: str | None  # None: no older entries match
