"""Upsell conversion (issue [13], revenue intelligence): do budget walls and empty credit
balances turn into upgrades and top-ups?

``UpsellRecorder.refused`` is the gateway's hook (``app.py`` hands it to the pipeline): a
refusal whose code is ``budget_exceeded`` or ``insufficient_credits`` becomes an upsell moment
(``farebox.core.upsell``). It costs the request a set lookup: the first refusal of a tenant,
kind and budget in a UTC hour is queued and written by a background task, every later one in
that hour is dropped in memory (and the store keeps one row per key even when several
processes write it). A moment that cannot be written is logged and lost: it is analytics,
never worth failing a request for.

``upsell_report``: for a UTC month, per plan (the tenant's plan when refused) and per budget,
the moments, the tenants refused, the tenants converted (an upgrade to a plan with a higher
``pricing.monthly_fee_usd``, or a credit top-up, within ``window_days`` after a moment), the
conversion rate (a percentage to two decimals, exact, half-even) and the month's revenue of
the converted tenants (plan fee plus usage, as ``billing.margins`` computes it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from farebox.billing.margins import MarginStore, past_month, percent, tenant_months
from farebox.config.settings import PlanConfig
from farebox.core.money import format_usd, parse_usd
from farebox.core.upsell import (
    KINDS,
    Group,
    Moment,
    budget_label,
    converting_times,
    groups,
    hour_of,
)
from farebox.errors import FareboxError, InvalidRequest
from farebox.stores.base import UpsellStore

log = logging.getLogger("farebox.upsell")
DAY = 86_400
MAX_WINDOW_DAYS = 366


class UpsellRecorder:
    """Turns refusals into upsell moments, at most one per tenant, kind, budget and hour."""

    def __init__(self, store: UpsellStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._hour = 0
        self._seen: set[tuple[str, str, str, int]] = set()  # this hour's, written or queued
        self._pending: list[Moment] = []
        self._task: asyncio.Task[None] | None = None

    def refused(self, tenant_id: str, plan: str, error: FareboxError) -> None:
        """The gateway's hook: ``tenant_id`` on ``plan`` was refused with ``error``."""
        kind = error.error_code
        if kind not in KINDS:
            return
        hour = hour_of(self._clock())
        if hour != self._hour:
            self._hour, self._seen = hour, set()
        held = error.extra.get("budget")
        budget = ""
        if isinstance(held, Mapping):
            budget = budget_label(held.get("scope"), held.get("period"), held.get("name"))
        moment = Moment(tenant_id, kind, budget, hour, plan)
        if moment.key in self._seen:
            return
        self._seen.add(moment.key)
        self._pending.append(moment)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._store.add_moments(batch)
            except Exception:  # analytics: never worth more than a log line
                log.warning("could not record %d upsell moment(s)", len(batch), exc_info=True)

    async def drain(self) -> None:
        """Write what is queued (the app's shutdown; tests)."""
        if self._task is not None:
            await self._task


def _line(group: Group, revenue: Mapping[str, int]) -> dict[str, Any]:
    return {
        "moments": group.moments,
        "tenants_refused": len(group.refused),
        "tenants_converted": len(group.converted),
        "conversion_rate_percent": percent(len(group.converted), len(group.refused)),
        "converted_revenue_usd": format_usd(sum(revenue.get(t, 0) for t in group.converted)),
        "converted_tenants": list(group.converted),
    }


async def upsell_report(
    store: MarginStore, upsell: UpsellStore, plans: Mapping[str, PlanConfig], default_plan: str,
    month: str, window_days: int = 14, now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The month's upsell moments and their conversions, per plan, per budget and in all."""
    if not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise InvalidRequest(f"'window_days' must be 1 to {MAX_WINDOW_DAYS}.", param="window_days")
    start, end = past_month(month, time.time() if now is None else now)
    window = window_days * DAY
    moments = await upsell.moments(start, end)
    changes = await upsell.plan_changes(start, end + window + 1)
    top_ups = await upsell.top_ups(start, end + window + 1)

    def fee(plan: str) -> int:
        config = plans.get(plan)
        return parse_usd(config.pricing.monthly_fee_usd) if config else 0

    times = converting_times(changes, top_ups, fee)
    refused = {m.tenant_id for m in moments}
    revenue = {
        m.tenant: m.revenue
        for m in await tenant_months(store, plans, default_plan, month)
        if m.tenant in refused
    }
    by_plan = groups(moments, lambda m: m.plan, times, window)
    by_budget = groups(moments, lambda m: f"{m.kind}\x00{m.budget}", times, window)
    (total,) = groups(moments, lambda m: "", times, window) or [Group("", 0, (), ())]
    return {
        "object": "upsell",
        "month": month,
        "window_days": window_days,
        "by_plan": [{"plan": g.name, **_line(g, revenue)} for g in by_plan],
        "by_budget": [_budget(g, revenue) for g in by_budget],
        "total": _line(total, revenue),
    }


def _budget(group: Group, revenue: Mapping[str, int]) -> dict[str, Any]:
    kind, budget = group.name.split("\x00", 1)
    return {"kind": kind, "budget": budget or None, **_line(group, revenue)}
