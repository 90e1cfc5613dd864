"""Admission: a request reserves its worst case against every budget and rate limit in scope,
in one atomic store operation, before anything is sent upstream.

``Admitter`` is the request path's step: it clamps ``max_tokens`` or walks the plan's downgrade
chain when the reservation does not fit. ``Budgets`` reserves, waits for room, fires threshold
alerts and keeps the leases of reservations in flight alive (reclaiming dead holders' leases).
Which budgets are in scope is ``farebox.gateway.budget_scope``'s job; settlement happens in
the store, in the same transaction as the ledger entry (``farebox.gateway.metering``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from farebox.config.settings import BudgetConfig, BudgetSettings
from farebox.core.budgets import MONEY_UNITS, Hold, HoldState
from farebox.core.credits import CreditTerms
from farebox.core.money import decimal_ratio, format_usd
from farebox.core.periods import iso_utc as iso
from farebox.core.pricing import Price
from farebox.core.records import (
    ApiKey,
    LedgerEntry,
    Reservation,
    ReserveOutcome,
    Tenant,
    Workspace,
)
from farebox.core.routing import Router, Target
from farebox.errors import BudgetExceeded, InsufficientCredits, RateLimited
from farebox.gateway.budget_scope import BudgetScopes, Scope
from farebox.gateway.call import Call, openai_user, placeholder
from farebox.gateway.rate_limits import RateLimits, refusal
from farebox.gateway.revenue_holds import (
    Fit,
    Revenue,
    insufficient_credits,
    room,
    room_settled,
)
from farebox.gateway.sizes import output_cap
from farebox.stores.base import ReservationStore

if TYPE_CHECKING:
    from farebox.billing.credits import CreditBook

log = logging.getLogger("farebox.budgets")
SETTLE_POLL_S = 0.05  # how often a request waiting for budget room looks again


@dataclass(frozen=True, slots=True)
class Admission:
    """What a request may do: its reservation, and the ``max_tokens`` it was held at."""

    reservation_id: str
    amount: int
    max_tokens: int
    states: list[HoldState]
    revenue: int = 0  # the worst-case revenue held against revenue budgets and credits

    @property
    def limited(self) -> bool:
        """Some rate limit counted this request."""
        return any(s.hold.unit not in MONEY_UNITS for s in self.states)

    def remaining_after(self, cost: int) -> int | None:
        """The tightest cost budget's remaining once this request settles at ``cost`` (None:
        no such budget in scope)."""
        return min(
            (
                max(s.limit - s.used - s.reserved + self.amount - cost, 0)
                for s in self.states
                if s.hold.unit == "usd"
            ),
            default=None,
        )

    def credits_after(self, revenue: int) -> tuple[HoldState, int] | None:
        """The credit balance counter and its balance once this request settles at
        ``revenue`` (None: the tenant is not prepaid)."""
        for s in self.states:
            if s.hold.scope == "credits":
                return s, max(s.limit - s.used - s.reserved + self.revenue - revenue, 0)
        return None


def scope_of(call: Call) -> Scope:
    who = call.principal
    user = who.user or openai_user(call.body)
    return Scope.of(who.tenant, who.key, call.plan.name, who.feature, user,
                    who.workspace_scope())  # fmt: skip


class Admitter:
    """Admits a request against its budgets and rate limits together, in one reservation;
    made once, by the ``Gateway``."""

    __slots__ = ("_budgets", "_clock", "_limits", "_router")

    def __init__(
        self,
        budgets: Budgets | None,
        limits: RateLimits | None,
        router: Router,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._budgets = budgets
        self._limits = limits
        self._router = router
        self._clock = clock

    async def admit(
        self, call: Call, targets: tuple[Target, ...], input_tokens: int, output: bool = True
    ) -> tuple[Target, ...]:
        """Reserve the worst case against every budget in scope; clamp ``max_tokens`` or
        walk the plan's downgrade chain when it does not fit; else ``BudgetExceeded``."""
        budgets = self._budgets
        if budgets is None:
            return targets
        scope, scopes = scope_of(call), budgets.scopes
        now = self._clock()
        scoped = scopes.holds(scope, now) if scopes.enabled(scope) else []
        terms = call.plan.credits
        if terms is not None and budgets.credits is not None:
            scoped = [*scoped, *await budgets.credits.holds(scope.tenant)]  # not the cached list
        limits = self._limit_holds(call, scope, now)
        if not scoped and not limits:
            return targets
        plan, feature = call.plan, call.principal.feature

        def priced(amount: int, out: int) -> int:
            return plan.revenue.worst(amount, input_tokens, out, call.model, feature)

        body, chain = call.body, dict(call.plan.downgrade)
        field_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        wanted = (body.get(field_name) or budgets.default_max_tokens()) if output else 0
        choices = (body.get("n") or 1) if output else 1  # each choice may use max_tokens
        model, seen = call.model, {call.model}
        if scoped and model in chain and await budgets.should_downgrade(scope):
            model, targets = self._downgraded(chain, model, targets, seen)
        while True:
            first = targets[0]

            def unsettled(rid: str, amount: int, target: Target = first) -> LedgerEntry:
                return placeholder(call, target, rid, amount)

            prices = [t.price for t in targets]
            per_choice = min(wanted, output_cap(targets)) if output else 0
            result = await budgets.admit(
                scope, scoped, prices, input_tokens, per_choice * choices, unsettled, limits,
                Revenue(priced, terms),
            )  # fmt: skip
            if isinstance(result, Admission):
                call.admission = result
                if output and scoped:
                    body[field_name] = max(result.max_tokens // choices, 1)
                return targets
            if not isinstance(result, BudgetExceeded):
                raise result  # a rate limit or credits: a cheaper model would not help
            if chain.get(model) in seen or model not in chain:
                raise result
            model, targets = self._downgraded(chain, model, targets, seen)

    def _limit_holds(self, call: Call, scope: Scope, now: float) -> list[Hold]:
        if self._limits is None:
            return []
        return self._limits.request_holds(scope, call.principal, call.model, now)

    def _downgraded(
        self,
        chain: Mapping[str, str],
        model: str,
        targets: tuple[Target, ...],
        seen: set[str],
    ) -> tuple[str, tuple[Target, ...]]:
        """The next model down the plan's chain, and its deployments that serve this
        endpoint; ``model`` and ``targets`` themselves when there is none."""
        cheaper = chain.get(model)
        found = self._router.resolve(cheaper) if cheaper and cheaper not in seen else None
        if not cheaper or not found:
            return model, targets
        seen.add(cheaper)
        kinds = {t.kind for t in targets}
        usable = tuple(t for t in found if t.kind in kinds) or targets
        return cheaper, usable


class Budgets:
    """Reserves against the budgets (and rate limits) in scope, waits for room when holds in
    flight may settle below their worst case, fires threshold alerts, keeps leases alive."""

    def __init__(
        self,
        store: ReservationStore,
        settings: BudgetSettings,
        plans: Mapping[str, Sequence[BudgetConfig]],
        *,
        clock: Callable[[], float] = time.time,
        upgrade_url: str | None = None,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
        credits: CreditBook | None = None,
    ) -> None:
        self._store = store
        self.credits = credits  # prepaid balances (None: no store for grants)
        self._settings = settings
        self.scopes = BudgetScopes(settings, plans)
        self._clock = clock
        self._upgrade_url = upgrade_url
        self._on_alert = on_alert
        self._share = decimal_ratio(settings.downgrade_below)
        self._active: set[str] = set()
        self._settle_signal = asyncio.Event()
        self._waiting = 0  # requests waiting for room
        self._lowest_threshold = min(settings.alert_thresholds, default=None)
        self._fired: set[tuple[str, float, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def reload(self, plans: Mapping[str, Sequence[BudgetConfig]]) -> None:
        """New plan budgets (the config file changed)."""
        self.scopes.reload(plans)

    def base_budget(
        self, tenant: Tenant, plan: str, scope: str, period: str, name: str | None
    ) -> dict[str, Any] | None:
        """The budget object a temporary increase applies to (override or plan)."""
        return self.scopes.base_budget(tenant, plan, scope, period, name)

    # states ------------------------------------------------------------------------------
    async def states(self, scope: Scope) -> list[HoldState]:
        return await self._store.budget_states(self.scopes.holds(scope, self._clock()))

    async def tenant_states(
        self, tenant: Tenant, plan: str, keys: Sequence[ApiKey],
        workspaces: Sequence[Workspace] = (),
    ) -> list[HoldState]:  # fmt: skip
        """Every budget of a tenant: tenant-wide, global, each workspace's and each key's."""
        scoped = self.scopes.tenant_holds(tenant, plan, keys, self._clock(), workspaces)
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
        revenue: Revenue | None = None,
    ) -> Admission | RateLimited:
        """Reserve the worst case against the budgets (cost, and with ``revenue`` revenue
        budgets and credits), and one request, the estimated tokens and a slot in flight
        against the rate ``limits``, all in one atomic step; clamp ``max_tokens`` if that is
        what fits the budgets.

        Returns the admission, or the error to raise: ``RateLimited`` at once when a rate
        limit is full, ``InsufficientCredits`` when the credit balance cannot cover even a
        clamped request, ``BudgetExceeded`` when a budget cannot (the caller may then try a
        cheaper model).
        """
        now = self._clock()
        deadline = time.monotonic() + self._settings.wait_for_room_s
        tokens = max_tokens
        counters = [*scoped, *limits]
        held_in_revenue = revenue is not None and any(h.unit == "revenue" for h in scoped)
        fits = Fit(prices, input_tokens, revenue.priced if revenue and held_in_revenue else None)
        while True:
            amount, held_revenue = fits.worst(tokens or 0)
            estimate = input_tokens + (tokens or 0)
            held, outcome = await self._reserve(
                counters, amount, estimate, now, unsettled, held_revenue
            )
            if outcome.ok:
                self._active.add(held.id)
                return Admission(held.id, amount, tokens or 0, outcome.states, held_revenue)
            if outcome.failed is not None and outcome.failed.hold.unit not in MONEY_UNITS:
                return refusal(outcome.failed, outcome.states, self._clock())
            fit = fits.tokens(_money(outcome.states), tokens or 0, room)
            if fit >= self._settings.min_output_tokens and (tokens is None or fit < tokens):
                tokens = fit  # lower max_tokens so the worst case fits
                continue
            if not self._may_free_up(outcome, fits, tokens or 0, deadline):
                self._alert_exhausted(outcome, scope.tenant, now, scope.key_alert)
                return self._exceeded(outcome, revenue.terms if revenue else None, held_revenue)
            await self._settled(deadline)  # in-flight holds will settle below their worst case
            tokens, now = max_tokens, self._clock()

    def _may_free_up(self, outcome: ReserveOutcome, fits: Fit, cap: int, deadline: float) -> bool:
        """Would a useful request fit once the holds in flight settle, and may we wait?"""
        money = _money(outcome.states)
        if time.monotonic() >= deadline or not any(s.reserved for s in money):
            return False
        room = fits.tokens(money, max(cap, self._settings.min_output_tokens), room_settled)
        return room >= self._settings.min_output_tokens

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
        counters: Sequence[Hold],
        amount: int,
        tokens: int,
        now: float,
        unsettled: Callable[[str, int], LedgerEntry],
        revenue: int = 0,
    ) -> tuple[Reservation, ReserveOutcome]:
        rid = f"rsv_{os.urandom(12).hex()}"
        entry = unsettled(rid, amount)
        expires = now + self._settings.lease_s
        reservation = Reservation(rid, amount, tuple(counters), expires, entry, tokens, revenue)
        return reservation, await self._store.reserve(reservation, busy=len(self._active) > 0)

    @contextlib.asynccontextmanager
    async def counting(
        self, limits: Sequence[Hold], unsettled: Callable[[str, int], LedgerEntry]
    ) -> AsyncIterator[list[HoldState]]:
        """Hold one request and a slot in flight against the rate ``limits`` while a token
        count runs (``RateLimited`` when one is full), then settle it without a ledger entry
        however the block ends: returned, raised or cancelled. The lease is renewed while it
        runs; a holder that dies leaves it to expire, released and recorded nowhere.
        ``unsettled`` makes the ``LEDGER_FREE`` placeholder entry (nothing reaches the ledger).
        Yields the counters' states with this request held."""
        now = self._clock()
        held, outcome = await self._reserve(limits, 0, 0, now, unsettled)
        if not outcome.ok:
            assert outcome.failed is not None
            raise refusal(outcome.failed, outcome.states, self._clock())
        self._active.add(held.id)
        try:
            yield outcome.states
        finally:
            self._active.discard(held.id)
            settle = asyncio.ensure_future(self._store.settle_counters(held))
            settle.add_done_callback(_logged)
            with contextlib.suppress(Exception):  # logged; its lease expires, released
                await asyncio.shield(settle)  # a client that goes away does not stop it
            self._wake_waiters()

    def finished(
        self,
        admission: Admission | None,
        cost: int,
        tenant: str,
        revenue: int = 0,
        terms: CreditTerms | None = None,
        *,
        key_threshold: int | None = None,
    ) -> None:
        """The reservation was settled (its ledger entry is written): stop renewing it, wake
        requests waiting for room, and fire the threshold alerts the new spend crossed
        (budgets, a key's own ``alert_threshold`` on its key budgets, and a prepaid
        balance's low-balance and top-up events)."""
        if admission is None:
            return
        self._active.discard(admission.reservation_id)
        self._wake_waiters()
        crossed = []
        alerting = self._lowest_threshold is not None or key_threshold is not None
        for s in admission.states if alerting else ():  # no thresholds: nothing to check
            lowest = self._lowest(s.hold, key_threshold)
            spent = cost if s.hold.unit == "usd" else revenue
            if s.hold.unit in MONEY_UNITS and s.hold.scope != "credits" and lowest is not None \
                    and (s.used + spent) * 100 >= s.limit * lowest:  # fmt: skip
                crossed.append(HoldState(s.hold, s.used + spent, 0, s.limit))
        if crossed:
            self._check_alerts(crossed, tenant, self._clock(), key_threshold)
        balance = admission.credits_after(revenue) if terms is not None else None
        if balance is not None and terms is not None and self._on_alert is not None:
            state, after = balance
            before = after + revenue
            for mark in terms.crossed(before, after):
                self._spawn(self._credit_alert(state, terms, mark, after, tenant))

    async def _credit_alert(
        self, state: HoldState, terms: CreditTerms, mark: int, balance: int, tenant: str
    ) -> None:
        """Once per threshold and grant level (a top-up re-arms it): ``credits.low_balance``,
        and ``credits.auto_top_up`` when the plan asks for one at this threshold."""
        c = terms.rate.credits
        level = replace(state.hold, key=f"{state.hold.key}:{state.limit}")
        if not await self._store.record_alert(level, mark, tenant, self._clock(), {}):
            return
        event: dict[str, Any] = {"type": "credits.low_balance", "tenant": tenant,
                                 "balance": c(balance), "threshold": c(mark)}  # fmt: skip
        if self._on_alert is not None:
            self._on_alert(event)
            top = terms.top_up
            if top is not None and top[0] == mark:
                key = f"auto_top_up:{tenant}:{state.limit}"  # the grant the SaaS then posts
                self._on_alert({"type": "credits.auto_top_up", "tenant": tenant,
                                "balance": c(balance), "amount": c(top[1]),
                                "idempotency_key": key})  # fmt: skip

    def _wake_waiters(self) -> None:
        """Requests waiting for room look again: a hold of this process was settled."""
        if self._waiting:
            signal, self._settle_signal = self._settle_signal, asyncio.Event()
            signal.set()

    def _exceeded(
        self, outcome: ReserveOutcome, terms: CreditTerms | None = None, needed: int = 0
    ) -> BudgetExceeded | InsufficientCredits:
        state = outcome.failed or min(_money(outcome.states), key=lambda s: s.remaining)
        hold = state.hold
        if hold.scope == "credits" and terms is not None:
            return insufficient_credits(state, terms, needed, self._upgrade_url)
        wait = max(int(state.resets_at - self._clock()) + 1, 1)
        extra: dict[str, Any] = {
            "budget": {
                "scope": hold.scope,
                "period": hold.period,
                "name": hold.name,
                **({"basis": "revenue"} if hold.unit == "revenue" else {}),
            },
            "used_usd": format_usd(state.used),
            "limit_usd": format_usd(state.limit),
            "resets_at": iso(state.resets_at),
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
    def _alert_exhausted(self, outcome: ReserveOutcome, tenant: str, now: float,
                         key_threshold: int | None = None) -> None:  # fmt: skip
        """A refusal means the budget is spent: every threshold up to 100% has been crossed
        (a key's own one too, on its key budget)."""
        failed = outcome.failed or min(_money(outcome.states), key=lambda s: s.remaining)
        if failed.hold.scope == "credits":  # a balance has its own low-balance events
            return
        spent = HoldState(failed.hold, failed.limit, 0, failed.limit)
        self._check_alerts([spent], tenant, now, key_threshold)

    def _lowest(self, hold: Hold, key_threshold: int | None) -> int | None:
        """The lowest alert threshold of a counter: a key's own counts on its key budgets."""
        if key_threshold is None or hold.scope != "key":
            return self._lowest_threshold
        return min(key_threshold, self._lowest_threshold or key_threshold)

    def _thresholds(self, hold: Hold, key_threshold: int | None) -> list[int]:
        thresholds = list(self._settings.alert_thresholds)
        if key_threshold is not None and hold.scope == "key" and key_threshold not in thresholds:
            thresholds.append(key_threshold)
        return thresholds

    def _check_alerts(self, states: Sequence[HoldState], tenant: str, now: float,
                      key_threshold: int | None = None) -> None:  # fmt: skip
        for state in states:
            if state.limit <= 0:
                continue
            percent = state.used * 100 // state.limit
            for threshold in self._thresholds(state.hold, key_threshold):
                slot = (state.hold.key, state.hold.bucket, threshold)
                if percent >= threshold and slot not in self._fired:
                    self._fired.add(slot)
                    self._spawn(self._alert(state, threshold, tenant, now))

    async def _alert(self, state: HoldState, threshold: int, tenant: str, now: float) -> None:
        detail = {"used_usd": format_usd(state.used), "limit_usd": format_usd(state.limit),
                  "scope": state.hold.scope, "period": state.hold.period}  # fmt: skip
        if await self._store.record_alert(state.hold, threshold, tenant, now, detail):
            event = {"type": "budget.threshold", "tenant": tenant, "budget": state.hold.key,
                     "threshold_percent": threshold, "resets_at": iso(state.hold.resets_at),
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


def _logged(settle: asyncio.Future[None]) -> None:
    """A count's settle that failed (its lease expires and is released unrecorded)."""
    if not settle.cancelled() and settle.exception() is not None:
        log.warning("a token count's settle failed: %r", settle.exception())


def _money(states: Sequence[HoldState]) -> list[HoldState]:
    """The money counters among a reservation's counters: budgets (cost or revenue) and
    credit balances (the others are rate limits)."""
    return [s for s in states if s.hold.unit in MONEY_UNITS]
