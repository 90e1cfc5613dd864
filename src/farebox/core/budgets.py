"""Hard budgets: which counters a request touches, its worst-case cost, and what fits.

A *hold* is one budget counter a reservation is held against. The store reserves the
worst case against every hold atomically, and settles each to the exact cost afterwards.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from farebox.core.money import mul_ratio
from farebox.core.periods import Period, Window, WindowCache, previous, window
from farebox.core.pricing import Price

SCOPES = ("tenant", "key", "feature", "user", "global", "workspace")
# What a counter counts. Budgets count pico-USD of cost (``usd``) or of revenue (``revenue``:
# budgets kept in what the tenant is charged, and prepaid credit balances); rate limits reuse
# the same reserve-then-settle counters for requests, tokens and requests in flight (a
# ``concurrent`` counter only ever holds reservations: it settles to nothing).
UNITS = ("usd", "revenue", "requests", "tokens", "concurrent")
MONEY_UNITS = ("usd", "revenue")


def held_amount(unit: str, amount: int, tokens: int, revenue: int = 0) -> int:
    """What a reservation of ``amount`` pico-USD of cost, ``revenue`` pico-USD of revenue
    and ``tokens`` estimated tokens holds."""
    if unit == "usd":
        return amount
    if unit == "revenue":
        return revenue
    if unit == "tokens":
        return tokens
    return 1


def settled_amount(unit: str, cost: int, tokens: int, revenue: int = 0) -> int:
    """What a settled request adds to a counter's spend: its exact cost or revenue, one
    request, its actual tokens, or nothing (a request in flight is no longer in flight)."""
    if unit == "usd":
        return cost
    if unit == "revenue":
        return revenue
    if unit == "tokens":
        return tokens
    return 1 if unit == "requests" else 0


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """A budget as configured. ``name`` picks one feature or user; None means each one."""

    scope: str
    period: Period
    limit: int  # pico-USD
    name: str | None = None
    rollover_cap: int | None = None
    weight: tuple[int, int] | None = None  # a feature budget as a share of the tenant's
    increase: int = 0  # a temporary increase, already filtered by its expiry
    basis: str = "cost"  # cost: what the providers charge; revenue: what the tenant is charged

    @property
    def ident(self) -> tuple[str, str, str | None] | tuple[str, str, str | None, str]:
        base = (self.scope, self.period.name, self.name)
        return base if self.basis == "cost" else (*base, self.basis)


@dataclass(frozen=True, slots=True)
class Hold:
    key: str  # the counter, e.g. "tenant:acme:day"
    scope: str
    period: str
    name: str | None
    limit: int  # base limit plus any temporary increase
    bucket: float  # where new spend is counted
    # spend counts in buckets from here on: up to ``bucket`` for a one-bucket window; for a
    # rolling window every later bucket too (``counts``)
    buckets_from: float
    resets_at: float
    rollover_cap: int = 0
    rollover_bucket: float | None = None  # the previous calendar window, for rollover
    base_limit: int = 0  # the previous window's limit, for rollover
    window_s: int = 0  # rolling windows: their length
    unit: str = "usd"  # usd (pico-USD) | requests | tokens | concurrent (see ``UNITS``)
    tenant: str = ""  # whose counter this is ("" for the global one): where a store keeps it

    def counts(self, bucket: float) -> bool:
        """Whether spend in ``bucket`` counts against this hold. A rolling window counts
        every bucket from its start on, the ones after ``bucket`` included: a request whose
        clock lags (a replica's clock, or a reserve that waited after reading the time) still
        sees what newer requests hold, so a limit is never exceeded in any window."""
        if bucket < self.buckets_from:
            return False
        return bucket <= self.bucket or self.buckets_from != self.bucket


class HeldCounters(Protocol):
    """A reservation as far as storing its counters goes (``records.Reservation``)."""

    @property
    def holds(self) -> tuple[Hold, ...]: ...

    def held(self, hold: Hold) -> int: ...


@dataclass(slots=True)  # not frozen: a dozen are built per request, and frozen init is slow
class HoldState:
    """One counter as the store sees it; ``limit`` includes rollover."""

    hold: Hold
    used: int
    reserved: int
    limit: int
    oldest: float | None = None  # the oldest bucket holding spend (rolling windows)

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used - self.reserved, 0)

    @property
    def resets_at(self) -> float:
        """When spend next leaves the window: its end, or for a rolling window the moment
        the oldest spend in it rolls off."""
        if self.hold.window_s:
            return (
                self.oldest if self.oldest is not None else self.hold.bucket
            ) + self.hold.window_s
        return self.hold.resets_at


class Identified(Protocol):
    """A spec that names what it limits (budgets and rate limits alike)."""

    @property
    def ident(self) -> Hashable: ...


SpecT = TypeVar("SpecT", bound=Identified)


def merge(plan: Sequence[SpecT], *overrides: Sequence[SpecT]) -> list[SpecT]:
    """Later lists replace earlier specs with the same ``ident`` (for a budget: scope, period
    and name; for a rate limit: scope and model)."""
    merged = {spec.ident: spec for spec in plan}
    for layer in overrides:
        for spec in layer:
            merged[spec.ident] = spec
    return list(merged.values())


def _subject(
    spec: BudgetSpec, tenant: str, key: str, feature: str | None, user: str | None,
    workspace: str | None = None,
) -> str | None:  # fmt: skip
    if spec.scope == "tenant":
        return f"tenant:{tenant}"
    if spec.scope == "workspace":  # each workspace its own counter, in its tenant's slot
        return f"workspace:{tenant}:{workspace}" if workspace else None
    if spec.scope == "key":
        return f"key:{key}"
    if spec.scope == "global":
        return "global"
    value = feature if spec.scope == "feature" else user
    if value is None or (spec.name is not None and spec.name != value):
        return None
    return f"{spec.scope}:{tenant}:{value}"


def _limit(spec: BudgetSpec, specs: Sequence[BudgetSpec]) -> int:
    if spec.weight is None:
        return spec.limit + spec.increase
    tenant = next(
        (s for s in specs if s.scope == "tenant" and s.period == spec.period and s.weight is None),
        None,
    )
    base = (tenant.limit + tenant.increase) if tenant else spec.limit
    return mul_ratio(base, *spec.weight) + spec.increase


def holds(
    specs: Sequence[BudgetSpec],
    *,
    tenant: str,
    key: str,
    feature: str | None,
    user: str | None,
    now: float,
    zone: ZoneInfo,
    windows: WindowCache | None = None,
    since: float = 0.0,
    shared_key: bool = False,
    workspace: str | None = None,
) -> list[Hold]:
    """The counters a request in this scope reserves against, one per counter key: a budget
    named for this feature or user replaces the generic one for the same counter. Each hold
    names the tenant whose counter it is: none for the global budget, nor for the key budget
    of a ``shared_key`` (a service key, which acts for many tenants)."""
    out: dict[str, Hold] = {}
    for spec in specs:
        subject = _subject(spec, tenant, key, feature, user, workspace)
        if subject is None:
            continue
        current = windows.get(spec.period, now, zone) if windows else window(spec.period, now, zone)
        before = previous(spec.period, current, zone) if spec.rollover_cap else None
        if before is not None and before.end <= since:  # nothing to carry from before it existed
            before = None
        owner = "" if spec.scope == "global" or (shared_key and spec.scope == "key") else tenant
        hold = _hold(spec, subject, current, before, _limit(spec, specs), owner)
        if hold.key not in out or spec.name is not None:
            out[hold.key] = hold
    return list(out.values())


def _hold(
    spec: BudgetSpec,
    subject: str,
    current: Window,
    before: Window | None,
    limit: int,
    tenant: str,
) -> Hold:
    revenue = spec.basis == "revenue"
    return Hold(
        key=f"{subject}:{spec.period.name}" + (":revenue" if revenue else ""),
        scope=spec.scope,
        period=spec.period.name,
        name=subject.split(":", 2)[-1] if spec.scope in ("feature", "user", "workspace") else None,
        limit=limit,
        bucket=current.bucket,
        buckets_from=current.buckets_from,
        resets_at=current.end,
        rollover_cap=spec.rollover_cap or 0,
        rollover_bucket=before.bucket if before else None,
        base_limit=limit - spec.increase,
        window_s=spec.period.seconds,
        unit="revenue" if revenue else "usd",
        tenant=tenant,
    )


def held_rows(reservation: HeldCounters) -> list[list[Any]]:
    """A reservation's counters as stored: ``[key, bucket, held, unit]`` each."""
    return [[h.key, h.bucket, reservation.held(h), h.unit] for h in reservation.holds]


def parse_held_rows(rows: Iterable[Sequence[Any]], amount: int) -> list[tuple[str, Any, int, str]]:
    """Stored counters back; rows written before rate limits, ``[key, bucket]``, held
    ``amount`` pico-USD."""
    out = []
    for row in rows:
        if len(row) >= 4:
            out.append((row[0], row[1], int(row[2]), str(row[3])))
        else:
            out.append((row[0], row[1], amount, "usd"))
    return out


def rollover(hold: Hold, used_before: int) -> int:
    """Unused budget of the previous window carried over, at most the cap."""
    if hold.rollover_bucket is None or not hold.rollover_cap:
        return 0
    return min(hold.rollover_cap, max(hold.base_limit - used_before, 0))


def input_rate(price: Price) -> int:
    """The most an input token can cost (cache writes can cost more than plain input)."""
    return max(price.input, price.cache_write_5m, price.cache_write_1h)


def worst_case(prices: Iterable[Price], input_tokens: int, max_tokens: int) -> int:
    """The most a request can cost on any of its deployments."""
    return max(input_tokens * input_rate(p) + max_tokens * p.output for p in prices)


def affordable_tokens(prices: Iterable[Price], input_tokens: int, room: int) -> int:
    """The largest ``max_tokens`` whose worst case fits in ``room``."""
    best = None
    for price in prices:
        left = room - input_tokens * input_rate(price)
        tokens = left // price.output if price.output else (1 << 30 if left >= 0 else -1)
        best = tokens if best is None else min(best, tokens)
    return max(best if best is not None else 0, 0)


def tightest(states: Sequence[HoldState]) -> HoldState | None:
    return min(states, key=lambda s: s.remaining, default=None)
