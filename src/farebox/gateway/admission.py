"""Hard budgets on the request path: resolve the budgets in scope, reserve the worst case,
clamp or downgrade when it does not fit, keep leases alive, reclaim dead holders' leases.

Settlement happens in the store, in the same transaction as the ledger entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from farebox.config.settings import BudgetConfig, BudgetSettings
from farebox.core.budgets import (
    BudgetSpec,
    Hold,
    HoldState,
    affordable_tokens,
    holds,
    merge,
    worst_case,
)
from farebox.core.money import decimal_ratio, format_usd, parse_usd
from farebox.core.periods import ROLLING_BUCKETS, WindowCache, parse_period
from farebox.core.pricing import Price
from farebox.core.records import ApiKey, LedgerEntry, Reservation, ReserveOutcome, Tenant
from farebox.errors import BudgetExceeded, InvalidRequest, RateLimited
from farebox.gateway.rate_limits import refusal
from farebox.stores.base import Store

log = logging.getLogger("farebox.budgets")
HOLDS_CACHE_SIZE = 10_000
SETTLE_POLL_S = 0.05  # how often a request waiting for budget room looks again
INCREASE_FIELDS = ("increase_usd", "increase_until")


def to_spec(data: Mapping[str, Any] | BudgetConfig, now: float) -> BudgetSpec:
    cfg = data if isinstance(data, BudgetConfig) else BudgetConfig.model_validate(data)
    increase = 0
    if cfg.increase_usd is not None and (cfg.increase_until is None or now < cfg.increase_until):
        increase = parse_usd(cfg.increase_usd)
    return BudgetSpec(
        scope=cfg.scope,
        period=parse_period(cfg.period),
        limit=parse_usd(cfg.limit_usd) if cfg.limit_usd is not None else 0,
        name=cfg.name,
        rollover_cap=parse_usd(cfg.rollover_cap_usd) if cfg.rollover_cap_usd else None,
        weight=decimal_ratio(cfg.weight) if cfg.weight is not None else None,
        increase=increase,
    )


def budget_ident(item: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """What identifies a budget object: a later one with the same ident replaces it."""
    return (item.get("scope", "tenant"), item.get("period", "month"), item.get("name"))


def validate_budgets(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Admin API input -> stored budget objects, or a 400 naming the problem."""
    out = []
    for i, item in enumerate(items):
        try:
            cfg = BudgetConfig.model_validate(item)
            to_spec(cfg, 0.0)
        except ValueError as exc:
            raise InvalidRequest(f"budgets[{i}]: {exc}", param=f"budgets[{i}]") from None
        out.append(cfg.model_dump(exclude_none=True))
    return out


@dataclass(frozen=True, slots=True)
class Admission:
    """What a request may do: its reservation, and the ``max_tokens`` it was held at."""

    reservation_id: str
    amount: int
    max_tokens: int
    states: list[HoldState]

    @property
    def limited(self) -> bool:
        """Some rate limit counted this request."""
        return any(s.hold.unit != "usd" for s in self.states)

    def remaining_after(self, cost: int) -> int | None:
        """The tightest budget's remaining once this request settles at ``cost`` (None: no
        budget in scope, only rate limits)."""
        return min(
            (
                max(s.limit - s.used - s.reserved + self.amount - cost, 0)
                for s in self.states
                if s.hold.unit == "usd"
            ),
            default=None,
        )


@dataclass(frozen=True, slots=True)
class Scope:
    tenant: str
    key: str
    feature: str | None
    user: str | None
    plan: str
    tenant_budgets: tuple[Mapping[str, Any], ...] = ()
    key_budgets: tuple[Mapping[str, Any], ...] = ()
    since: float = 0.0  # when the tenant was created

    @classmethod
    def of(cls, tenant: Tenant, key: ApiKey | None, plan: str, feature: str | None = None,
           user: str | None = None) -> Scope:  # fmt: skip
        return cls(
            tenant=tenant.id,
            key=key.id if key else "",
            feature=feature,
            user=user,
            plan=plan,
            tenant_budgets=tuple(tenant.budgets),
            key_budgets=tuple(key.budgets) if key else (),
            since=tenant.created_at,
        )


class Budgets:
    def __init__(
        self,
        store: Store,
        settings: BudgetSettings,
        plans: Mapping[str, Sequence[BudgetConfig]],
        *,
        clock: Callable[[], float] = time.time,
        upgrade_url: str | None = None,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._zone = ZoneInfo(settings.timezone)
        self._plans: dict[str, list[BudgetConfig]] = {}
        self.reload(plans)
        self._global = list(settings.global_budgets)
        self._clock = clock
        self._upgrade_url = upgrade_url
        self._on_alert = on_alert
        self._share = decimal_ratio(settings.downgrade_below)
        self._windows = WindowCache()
        self._active: set[str] = set()
        self._settle_signal = asyncio.Event()
        self._waiting = 0  # requests waiting for room
        self._lowest_threshold = min(settings.alert_thresholds, default=None)
        self._fired: set[tuple[str, float, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def reload(self, plans: Mapping[str, Sequence[BudgetConfig]]) -> None:
        """New plan budgets (the config file changed): forget what was derived from the old."""
        self._plans = {name: list(budgets) for name, budgets in plans.items()}
        self._plan_specs: dict[str, list[BudgetSpec]] = {}
        self._holds_cache: dict[tuple[Any, ...], tuple[float, float, list[Hold]]] = {}

    # scope ----------------------------------------------------------------------------
    def specs(self, scope: Scope, now: float) -> list[BudgetSpec]:
        plan = self._plan_specs.get(scope.plan)
        if plan is None:  # plan budgets never carry temporary increases: parse them once
            configs = (*self._global, *self._plans.get(scope.plan, ()))
            plan = self._plan_specs[scope.plan] = [to_spec(b, now) for b in configs]
        if not scope.tenant_budgets and not scope.key_budgets:
            return plan
        tenant = [to_spec(b, now) for b in scope.tenant_budgets]
        key = [to_spec(b, now) for b in scope.key_budgets]
        return merge(plan, tenant, key)

    def holds(self, scope: Scope, now: float) -> list[Hold]:
        """The counters in scope. Without overrides they depend only on who is asking and
        on the current windows, so they are cached until the first of those windows ends."""
        cacheable = not scope.tenant_budgets and not scope.key_budgets
        slot = (scope.tenant, scope.key, scope.feature, scope.user, scope.plan, scope.since)
        if cacheable:
            found = self._holds_cache.get(slot)
            if found is not None and found[0] <= now < found[1]:
                return found[2]
        specs = self.specs(scope, now)
        result = holds(specs, tenant=scope.tenant, key=scope.key, feature=scope.feature,
                       user=scope.user, now=now, zone=self._zone, windows=self._windows,
                       since=scope.since)  # fmt: skip
        if cacheable:
            if len(self._holds_cache) >= HOLDS_CACHE_SIZE:
                self._holds_cache.clear()
            until = min((_bucket_end(h) for h in result), default=now)
            self._holds_cache[slot] = (now, until, result)
        return result

    def base_budget(
        self, tenant: Tenant, plan: str, scope: str, period: str, name: str | None
    ) -> dict[str, Any] | None:
        """The budget object a temporary increase applies to (override or plan)."""
        planned = [b.model_dump(exclude_none=True) for b in self._plans.get(plan, ())]
        for item in (*tenant.budgets, *planned):
            if budget_ident(item) == (scope, period, name):
                return {k: v for k, v in item.items() if k not in INCREASE_FIELDS}
        return None

    def enabled(self, scope: Scope) -> bool:
        return bool(
            self._global or self._plans.get(scope.plan) or scope.tenant_budgets or scope.key_budgets
        )

    async def states(self, scope: Scope) -> list[HoldState]:
        return await self._store.budget_states(self.holds(scope, self._clock()))

    async def tenant_states(
        self, tenant: Tenant, plan: str, keys: Sequence[ApiKey]
    ) -> list[HoldState]:
        """Every budget of a tenant: tenant-wide, global, and each key's."""
        now = self._clock()
        scoped = [h for h in self.holds(Scope.of(tenant, None, plan), now) if h.scope != "key"]
        for key in keys:
            scoped += [h for h in self.holds(Scope.of(tenant, key, plan), now) if h.scope == "key"]
        return await self._store.budget_states(scoped)

    # admission -------------------------------------------------------------------------
    def default_max_tokens(self) -> int:
        return self._settings.default_max_tokens

    async def should_downgrade(self, scope: Scope) -> bool:
        """Less than the configured share of some budget in scope is left."""
        num, den = self._share
        return any(s.remaining * den < s.limit * num for s in await self.states(scope))

    async def admit(
        self,
        scope: Scope,
        scoped: list[Hold],
        prices: Sequence[Price],
        input_tokens: int,
        max_tokens: int | None,
        unsettled: Callable[[str, int], LedgerEntry],
        limits: Sequence[Hold] = (),
    ) -> Admission | BudgetExceeded | RateLimited:
        """Reserve the worst case against the budgets, and one request, the estimated tokens
        and a slot in flight against the rate ``limits``, all in one atomic step; clamp
        ``max_tokens`` if that is what fits the budgets.

        Returns the admission, or the error to raise: ``RateLimited`` at once when a rate
        limit is full, ``BudgetExceeded`` if even a clamped request cannot fit (the caller may
        then try a cheaper model).
        """
        now = self._clock()
        deadline = time.monotonic() + self._settings.wait_for_room_s
        tokens = max_tokens
        counters = [*scoped, *limits]
        while True:
            amount = worst_case(prices, input_tokens, tokens or 0)
            estimate = input_tokens + (tokens or 0)
            rid, outcome = await self._reserve(counters, amount, estimate, now, unsettled)
            if outcome.ok:
                self._active.add(rid)
                return Admission(rid, amount, tokens or 0, outcome.states)
            if outcome.failed is not None and outcome.failed.hold.unit != "usd":
                return refusal(outcome.failed, outcome.states, self._clock())
            room = min(s.remaining for s in _money(outcome.states))
            fit = affordable_tokens(prices, input_tokens, room)
            if fit >= self._settings.min_output_tokens and (tokens is None or fit < tokens):
                tokens = fit  # lower max_tokens so the worst case fits
                continue
            if not self._may_free_up(outcome, prices, input_tokens, deadline):
                self._alert_exhausted(outcome, scope.tenant, now)
                return self._exceeded(outcome)
            await self._settled(deadline)  # in-flight holds will settle below their worst case
            tokens, now = max_tokens, self._clock()

    def _may_free_up(
        self, outcome: ReserveOutcome, prices: Sequence[Price], input_tokens: int, deadline: float
    ) -> bool:
        """Would a useful request fit once the holds in flight settle, and may we wait?"""
        money = _money(outcome.states)
        if time.monotonic() >= deadline or not any(s.reserved for s in money):
            return False
        room = min(max(s.limit - s.used, 0) for s in money)
        return affordable_tokens(prices, input_tokens, room) >= self._settings.min_output_tokens

    async def _settled(self, deadline: float) -> None:
        """Wait until a reservation of this process settles, or a short while (holds of other
        processes settle unseen), or the deadline."""
        wait = min(SETTLE_POLL_S, max(deadline - time.monotonic(), 0.0))
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settle_signal.wait(), wait)
        finally:
            self._waiting -= 1

    async def _reserve(
        self,
        counters: list[Hold],
        amount: int,
        tokens: int,
        now: float,
        unsettled: Callable[[str, int], LedgerEntry],
    ) -> tuple[str, ReserveOutcome]:
        rid = f"rsv_{os.urandom(12).hex()}"
        entry = unsettled(rid, amount)
        expires = now + self._settings.lease_s
        reservation = Reservation(rid, amount, tuple(counters), expires, entry, tokens)
        return rid, await self._store.reserve(reservation, busy=len(self._active) > 0)

    def finished(self, admission: Admission | None, cost: int, tenant: str) -> None:
        """The reservation was settled (its ledger entry is written): stop renewing it, wake
        requests waiting for room, and fire threshold alerts the new spend crossed."""
        if admission is None:
            return
        self._active.discard(admission.reservation_id)
        if self._waiting:
            signal, self._settle_signal = self._settle_signal, asyncio.Event()
            signal.set()
        lowest = self._lowest_threshold
        crossed = [
            HoldState(s.hold, s.used + cost, 0, s.limit)
            for s in _money(admission.states)
            if lowest is not None and (s.used + cost) * 100 >= s.limit * lowest
        ]
        if crossed:
            self._check_alerts(crossed, tenant, self._clock())

    def _exceeded(self, outcome: ReserveOutcome) -> BudgetExceeded:
        state = outcome.failed or min(_money(outcome.states), key=lambda s: s.remaining)
        hold = state.hold
        wait = max(int(state.resets_at - self._clock()) + 1, 1)
        extra: dict[str, Any] = {
            "budget": {"scope": hold.scope, "period": hold.period, "name": hold.name},
            "used_usd": format_usd(state.used),
            "limit_usd": format_usd(state.limit),
            "resets_at": _iso(state.resets_at),
            "retry_after": wait,
        }
        if self._upgrade_url:
            extra["upgrade_url"] = self._upgrade_url
        label = f"{hold.scope} {hold.period}" + (f" ({hold.name})" if hold.name else "")
        return BudgetExceeded(
            f"Budget exceeded: the {label} budget of ${extra['limit_usd']} has "
            f"${format_usd(state.remaining)} left, not enough for this request. "
            f"It resets at {extra['resets_at']}.",
            headers={"Retry-After": str(wait)},
            extra=extra,
        )

    # alerts ----------------------------------------------------------------------------
    def _alert_exhausted(self, outcome: ReserveOutcome, tenant: str, now: float) -> None:
        """A refusal means the budget is spent: every threshold up to 100% has been crossed."""
        failed = outcome.failed or min(_money(outcome.states), key=lambda s: s.remaining)
        self._check_alerts([HoldState(failed.hold, failed.limit, 0, failed.limit)], tenant, now)

    def _check_alerts(self, states: Sequence[HoldState], tenant: str, now: float) -> None:
        for state in states:
            if state.limit <= 0:
                continue
            percent = state.used * 100 // state.limit
            for threshold in self._settings.alert_thresholds:
                slot = (state.hold.key, state.hold.bucket, threshold)
                if percent >= threshold and slot not in self._fired:
                    self._fired.add(slot)
                    self._spawn(self._alert(state, threshold, tenant, now))

    async def _alert(self, state: HoldState, threshold: int, tenant: str, now: float) -> None:
        detail = {"used_usd": format_usd(state.used), "limit_usd": format_usd(state.limit),
                  "scope": state.hold.scope, "period": state.hold.period}  # fmt: skip
        if await self._store.record_alert(state.hold, threshold, tenant, now, detail):
            event = {"type": "budget.threshold", "tenant": tenant, "budget": state.hold.key,
                     "threshold_percent": threshold, "resets_at": _iso(state.hold.resets_at),
                     **detail}  # fmt: skip
            if self._on_alert is not None:
                self._on_alert(event)

    # leases ------------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._keep_leases()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _keep_leases(self) -> None:
        """Renew the leases of reservations in flight; reclaim expired ones of dead holders."""
        period = self._settings.lease_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                now = self._clock()
                await self._store.extend_leases(list(self._active), now + self._settings.lease_s)
                reclaimed = await self._store.reclaim_expired(now)
                if reclaimed:
                    log.warning("reclaimed %d expired budget reservations", len(reclaimed))
            except Exception:
                log.exception("budget lease upkeep failed")


def _money(states: Sequence[HoldState]) -> list[HoldState]:
    """The budget counters among a reservation's counters (the others are rate limits)."""
    return [s for s in states if s.hold.unit == "usd"]


def _bucket_end(hold: Hold) -> float:
    """When a hold's current bucket (the one new spend goes into) ends."""
    if hold.window_s:
        return hold.bucket + max(hold.window_s // ROLLING_BUCKETS, 1)
    return hold.resets_at


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def state_json(state: HoldState) -> dict[str, Any]:
    """A budget object as CONTRACT shows it in /v1/me and the admin API."""
    hold = state.hold
    return {
        "scope": hold.scope,
        "period": hold.period,
        "name": hold.name,
        "limit_usd": format_usd(state.limit),
        "used_usd": format_usd(state.used),
        "reserved_usd": format_usd(state.reserved),
        "remaining_usd": format_usd(state.remaining),
        "resets_at": _iso(state.resets_at) if state.resets_at < 2.0**52 else None,
    }
