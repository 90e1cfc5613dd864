"""Rate limits: which request, token and in-flight counters a request takes, and what the
client is told (``x-ratelimit-*`` headers, 429 with ``Retry-After``).

A rate limit is a sliding window over a counter that is reserved before the upstream call
and settled after it, exactly like a budget (``farebox.gateway.admission``), in the same
atomic store operation. So limits hold across workers (SQLite) and replicas (Redis) with no
extra round trip, a dead holder's in-flight slot is reclaimed with its lease, and tokens per
minute are charged from the estimate up front and corrected to the actual usage at settlement.

The window is split into buckets (``window_s // 20`` seconds each, at least 1 s: 3 s for a
minute). A request is admitted when the buckets that can hold any request of the last
``window_s`` seconds, plus this one, stay within the limit. That is one bucket more than the
window, so no window of ``window_s`` seconds ever holds more than the limit, and there are no
fixed-window bursts at bucket edges; the price is that a full window frees up to one bucket
later (63 s instead of 60 for a minute). Twenty buckets keep the window sum cheap: the store
adds up at most 21 of them per request.
"""

from __future__ import annotations

import fnmatch
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from farebox.config.settings import RateLimitConfig
from farebox.core.budgets import Hold, HoldState, merge
from farebox.errors import InvalidRequest, RateLimited

if TYPE_CHECKING:  # who asks, and the scope admission made of it
    from farebox.gateway.auth import Principal
    from farebox.gateway.budget_scope import Scope

BUCKETS = 20
# a scope ip limit ``across_tenants``: its counters belong to no tenant, so on Redis they live
# in one of this many slots of their own, ``{P/t/~ip.<n>}`` (``~`` is never in a tenant id),
# chosen by a CRC of the client: spread over a cluster, and a bounded set of lease slots
IP_SHARDS = 64
CACHE_SIZE = 10_000
FOREVER = 2.0**62
LIMIT_FIELDS = (
    ("requests", "requests_per_minute"),
    ("tokens", "tokens_per_minute"),
    ("concurrent", "concurrent"),
)


@dataclass(frozen=True, slots=True)
class LimitSpec:
    scope: str  # key | tenant | user | ip
    requests: int | None
    tokens: int | None
    concurrent: int | None
    model: str | None  # a glob on the requested model; None: every model
    window_s: int
    across_tenants: bool = False  # scope ip: one counter for the client across every tenant

    @property
    def ident(self) -> tuple[str, str | None]:
        return ("ip*" if self.across_tenants else self.scope, self.model)

    def applies_to(self, model: str) -> bool:
        return self.model is None or fnmatch.fnmatchcase(model, self.model)


def to_spec(data: Mapping[str, Any] | RateLimitConfig) -> LimitSpec:
    cfg = data if isinstance(data, RateLimitConfig) else RateLimitConfig.model_validate(data)
    return LimitSpec(cfg.scope, cfg.requests_per_minute, cfg.tokens_per_minute, cfg.concurrent,
                     cfg.model, cfg.window_s, cfg.across_tenants and cfg.scope == "ip")  # fmt: skip


def validate_limits(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Admin API input -> stored rate-limit objects, or a 400 naming the problem."""
    out = []
    for i, item in enumerate(items):
        try:
            cfg = RateLimitConfig.model_validate(item)
        except ValueError as exc:
            raise InvalidRequest(f"rate_limits[{i}]: {exc}", param=f"rate_limits[{i}]") from None
        if cfg.across_tenants:  # its counter is the plan's: one override would move it for all
            raise InvalidRequest(
                f"rate_limits[{i}].across_tenants: only a plan's rate limits (the config's "
                "plans.<name>.rate_limits) may count a client across tenants; a tenant, "
                "workspace or key override may not",
                param=f"rate_limits[{i}].across_tenants",
            )
        out.append(cfg.model_dump(exclude_none=True))
    return out


def _subject(
    scope: str, tenant: str, key: str, user: str | None, ip: str | None, workspace: str | None
) -> str | None:
    if scope == "key":
        return f"key:{key}"
    if scope == "tenant":
        return f"tenant:{tenant}"
    if scope == "workspace":
        return f"workspace:{tenant}:{workspace}" if workspace else None
    value = user if scope == "user" else ip
    return f"{scope}:{tenant}:{value}" if value else None


def across_owner(client: str) -> str:
    """Where a client's across-tenants counters are kept (``Hold.tenant``: a Redis slot)."""
    return f"~ip.{zlib.crc32(client.encode('utf-8', 'surrogatepass')) % IP_SHARDS}"


def _across_client(ip: str | None, device: str | None, shared_key: bool) -> str | None:
    """Who an ``across_tenants`` limit counts: the client IP; for a service key (its bare IP
    is the SaaS's own server) the device it names, else no one. A device never replaces a
    client IP: a client behind a proxy that passes headers on could make one up per request."""
    if shared_key:
        return f"device:{device}" if device else None
    return ip


def _owner(spec: LimitSpec, tenant: str, client: str | None, shared_key: bool) -> str:
    if spec.across_tenants:
        return across_owner(client or "")
    return "" if shared_key and spec.scope == "key" else tenant


def _window_hold(
    spec: LimitSpec, subject: str, unit: str, limit: int, now: float, tenant: str
) -> Hold:
    size = max(spec.window_s // BUCKETS, 1)
    count = math.ceil(spec.window_s / size)
    bucket = float(int(now // size) * size)
    return Hold(
        key=f"rl:{subject}:{spec.model or '*'}:{unit}:{spec.window_s}",
        scope=spec.scope,
        period=f"{unit}/{spec.window_s}s",
        name=spec.model,
        limit=limit,
        bucket=bucket,
        buckets_from=bucket - count * size,
        resets_at=bucket + size,
        window_s=(count + 1) * size,  # the oldest bucket counted leaves this long after it began
        unit=unit,
        tenant=tenant,
    )


def holds(
    specs: Sequence[LimitSpec],
    *,
    tenant: str,
    key: str,
    user: str | None,
    ip: str | None,
    model: str,
    now: float,
    shared_key: bool = False,
    workspace: str | None = None,
    plan: str = "",
    device: str | None = None,
) -> list[Hold]:
    """The counters one request takes. A scope with no subject (no end user, no client IP)
    is not limited. Each hold names the tenant whose counter it is (none for a
    ``shared_key``'s own limits: a service key acts for many tenants). A scope ip limit
    ``across_tenants`` counts the client once for every tenant on ``plan``: its counter
    names the plan and the client, not the tenant. Scope ip limits count the client IP; a
    service key's bare IP (the SaaS's own server) is no client for ``across_tenants``, which
    then counts the ``device`` it names, if any."""
    out: list[Hold] = []
    across = _across_client(ip, device, shared_key)
    for spec in specs:
        if spec.across_tenants:
            subject = f"ip:*:{plan}:{across}" if across else None
        else:
            subject = _subject(spec.scope, tenant, key, user, ip, workspace)
        if subject is None or not spec.applies_to(model):
            continue
        owner = _owner(spec, tenant, across, shared_key)
        if spec.requests is not None:
            out.append(_window_hold(spec, subject, "requests", spec.requests, now, owner))
        if spec.tokens is not None:
            out.append(_window_hold(spec, subject, "tokens", spec.tokens, now, owner))
        if spec.concurrent is not None:
            out.append(
                Hold(
                    key=f"rl:{subject}:{spec.model or '*'}:concurrent",
                    scope=spec.scope,
                    period="concurrent",
                    name=spec.model,
                    limit=spec.concurrent,
                    bucket=0.0,
                    buckets_from=0.0,
                    resets_at=FOREVER,
                    unit="concurrent",
                    tenant=owner,
                )  # fmt: skip
            )
    return out


class RateLimits:
    """Each plan's rate limits, merged with a tenant's and a key's overrides."""

    def __init__(self, plans: Mapping[str, Sequence[RateLimitConfig]]) -> None:
        self._plans: dict[str, list[LimitSpec]] = {}
        self._cache: dict[tuple[Any, ...], tuple[float, list[Hold]]] = {}
        self.reload(plans)

    def reload(self, plans: Mapping[str, Sequence[RateLimitConfig]]) -> None:
        self._plans = {name: [to_spec(c) for c in configs] for name, configs in plans.items()}
        self._cache = {}

    def request_holds(self, scope: Scope, who: Principal, model: str, now: float) -> list[Hold]:
        """``holds`` for one request of ``who`` to ``model``, in admission's ``scope``."""
        return self.holds(scope.plan, who.tenant.rate_limits, who.key.rate_limits,
                          tenant=scope.tenant, key=scope.key, user=scope.user,
                          ip=who.client_ip, model=model, now=now,
                          shared_key=scope.shared_key, workspace=scope.workspace,
                          workspace_limits=scope.workspace_limits,
                          device=who.device)  # fmt: skip

    def holds(
        self,
        plan: str,
        tenant_limits: Sequence[Mapping[str, Any]],
        key_limits: Sequence[Mapping[str, Any]],
        *,
        tenant: str,
        key: str,
        user: str | None,
        ip: str | None,
        model: str,
        now: float,
        shared_key: bool = False,
        workspace: str | None = None,
        workspace_limits: Sequence[Mapping[str, Any]] = (),
        device: str | None = None,
    ) -> list[Hold]:
        """The counters one request takes. Without overrides they depend only on who asks
        and on the current buckets, so they are cached until the first bucket ends."""
        cacheable = not tenant_limits and not key_limits and not workspace_limits
        device = device if shared_key else None  # counted for a service key only
        slot = (plan, tenant, key, user, ip, model, shared_key, workspace, device)
        if cacheable:
            found = self._cache.get(slot)
            if found is not None and now < found[0]:
                return found[1]
        specs = self.specs(plan, tenant_limits, key_limits, workspace_limits)
        if not specs:
            return []
        result = holds(specs, tenant=tenant, key=key, user=user, ip=ip, model=model, now=now,
                       shared_key=shared_key, workspace=workspace, plan=plan,
                       device=device)  # fmt: skip
        if cacheable:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[slot] = (min((h.resets_at for h in result), default=FOREVER), result)
        return result

    def specs(
        self,
        plan: str,
        tenant_limits: Sequence[Mapping[str, Any]] = (),
        key_limits: Sequence[Mapping[str, Any]] = (),
        workspace_limits: Sequence[Mapping[str, Any]] = (),
    ) -> list[LimitSpec]:
        """The plan's limits, overridden by the tenant's, the workspace's, then the key's."""
        base = self._plans.get(plan, [])
        if not tenant_limits and not key_limits and not workspace_limits:
            return base
        layers = (tenant_limits, workspace_limits, key_limits)
        # an override never counts across tenants (refused by the admin API since; one stored
        # before is ignored): that counter is the plan's, shared by every tenant on it
        return merge(base, *([s for s in map(to_spec, layer) if not s.across_tenants]
                             for layer in layers))  # fmt: skip


# what the client is told ------------------------------------------------------------------
def _duration(ms: int) -> str:
    """OpenAI's reset format from whole milliseconds: ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    minutes, rest = divmod(ms, 60_000)
    text = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds, rounded up: a reset is never told early."""
    return max(math.ceil(seconds * 1000 - 1e-6), 0)


def _tightest(states: Sequence[HoldState], unit: str) -> HoldState | None:
    return min((s for s in states if s.hold.unit == unit), key=lambda s: s.remaining, default=None)


def headers(states: Sequence[HoldState], now: float) -> dict[str, str]:
    """``x-ratelimit-*`` for the tightest request and token limits in scope. ``reset`` is
    when every request or token counted now has left the window."""
    out: dict[str, str] = {}
    for unit in ("requests", "tokens"):
        state = _tightest(states, unit)
        if state is None:
            continue
        reset = state.hold.bucket + state.hold.window_s - now
        out[f"x-ratelimit-limit-{unit}"] = str(state.limit)
        out[f"x-ratelimit-remaining-{unit}"] = str(state.remaining)
        out[f"x-ratelimit-reset-{unit}"] = _duration(_ms(reset))
    return out


def retry_after(state: HoldState, now: float) -> float:
    """Seconds until the failed counter next has room: the oldest request or tokens in its
    window roll off (a slot in flight frees when a request finishes: look again in 1 s)."""
    if state.hold.unit == "concurrent":
        return 1.0
    return max(state.resets_at - now, 0.001)


def describe(hold: Hold) -> str:
    what = {"requests": "requests", "tokens": "tokens", "concurrent": "concurrent requests"}
    size = hold.period.split("/", 1)[1] if "/" in hold.period else ""
    per = f" per {size}" if size else ""
    model = f" on model {hold.name!r}" if hold.name else ""
    return f"{hold.limit} {what.get(hold.unit, hold.unit)}{per} for this {hold.scope}{model}"


def refusal(failed: HoldState, states: Sequence[HoldState], now: float) -> RateLimited:
    """The 429: ``Retry-After`` (whole seconds, rounded up), ``retry-after-ms`` and the failed
    unit's ``x-ratelimit-reset-*`` all name the same instant, when the failed counter next
    has room; that unit's limit and remaining are the failed counter's."""
    wait_ms = max(_ms(retry_after(failed, now)), 1)
    seconds = -(-wait_ms // 1000)
    hdrs = headers(states, now)
    unit = failed.hold.unit
    if unit in ("requests", "tokens"):
        hdrs[f"x-ratelimit-limit-{unit}"] = str(failed.limit)
        hdrs[f"x-ratelimit-remaining-{unit}"] = str(failed.remaining)
        hdrs[f"x-ratelimit-reset-{unit}"] = _duration(wait_ms)
    hdrs["Retry-After"] = str(seconds)
    hdrs["retry-after-ms"] = str(wait_ms)
    return RateLimited(
        f"Rate limit exceeded: {describe(failed.hold)}. Retry after {seconds} s.",
        headers=hdrs,
        extra={
            "limit": {
                "scope": failed.hold.scope,
                "unit": failed.hold.unit,
                "model": failed.hold.name,
                "limit": failed.limit,
            },
            "retry_after": seconds,
        },  # fmt: skip
    )


def limit_json(spec: LimitSpec) -> dict[str, Any]:
    """A rate limit as /v1/me and the admin API show it."""
    out: dict[str, Any] = {"scope": spec.scope, "window_s": spec.window_s}
    for unit, name in LIMIT_FIELDS:
        value = getattr(spec, unit)
        if value is not None:
            out[name] = value
    if spec.model is not None:
        out["model"] = spec.model
    if spec.across_tenants:
        out["across_tenants"] = True
    return out
