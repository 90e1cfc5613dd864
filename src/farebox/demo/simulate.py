"""``farebox simulate``: weeks of synthetic traffic through the real anomaly detector.

The run has two parts, both in simulated time:

1. **History**: ``history_days`` of hourly traffic for every established tenant, counted
   into the store as the gateway would have counted it.
2. **Live**: ``days`` of traffic minute by minute, with onboarding ramps and labelled
   anomalies, while the configured ``AnomalyWatch`` checks every ``check_interval_s``
   exactly as it does in ``farebox serve``. A paused tenant's or key's traffic stops (its
   requests would get 403); an operator resumes it 30 minutes after its anomaly ends (or
   after a false pause), through the same path as the admin API, which resolves the incident.

It scores every incident against the labels: precision, recall and time to pause.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from farebox.anomaly.watch import AnomalyWatch
from farebox.app import make_watch
from farebox.config.settings import Settings
from farebox.core.anomaly import DAY, HOUR, MINUTE, Incident
from farebox.core.money import display_usd, format_usd
from farebox.core.records import ApiKey
from farebox.demo.synthetic import (
    KINDS,
    Anomaly,
    TenantProfile,
    poisson,
    profiles,
    schedule,
    spend,
)
from farebox.http.client import HttpClient
from farebox.identity.tenancy import Tenancy, TenancyStore
from farebox.notify.channels import WebhookAlerts
from farebox.stores.base import Store
from farebox.stores.memory.store import MemoryStore

START = 1793577600  # Monday 2026-11-02 00:00 UTC
RESUME_AFTER_S = 30 * MINUTE


@dataclass
class SimResult:
    tenants: int
    ramps: int
    days: int
    history_days: int
    window_s: int
    requests: int = 0
    spend: int = 0
    anomalies: list[Anomaly] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    resolved: list[Incident] = field(default_factory=list)
    daily: dict[str, list[int]] = field(default_factory=dict)  # tenant -> requests per day

    def match(self, incident: Incident) -> Anomaly | None:
        for anomaly in self.anomalies:
            if anomaly.tenant == incident.tenant_id and (
                anomaly.start <= incident.opened_at <= anomaly.end + self.window_s
            ):
                return anomaly
        return None

    @property
    def false_positives(self) -> list[Incident]:
        return [i for i in self.incidents if self.match(i) is None]

    def detection(self, anomaly: Anomaly) -> Incident | None:
        found = [i for i in self.incidents if self.match(i) == anomaly]
        return min(found, key=lambda i: i.opened_at) if found else None

    def precision(self) -> float | None:
        if not self.incidents:
            return None
        return (len(self.incidents) - len(self.false_positives)) / len(self.incidents)

    def recall(self) -> float | None:
        if not self.anomalies:
            return None
        return sum(1 for a in self.anomalies if self.detection(a)) / len(self.anomalies)

    def times_to_pause_s(self) -> list[float]:
        return [found.opened_at - a.start for a in self.anomalies if (found := self.detection(a))]


class _Run:
    """One simulation's mutable state: the clock, what is paused, what resumes when."""

    def __init__(self, watch: AnomalyWatch, result: SimResult) -> None:
        self.watch = watch
        self.result = result
        self.now = START
        self.paused_tenants: set[str] = set()
        self.paused_keys: set[str] = set()
        self.resumes: list[tuple[float, Incident]] = []

    def opened(self, incident: Incident) -> None:
        self.result.incidents.append(incident)
        if incident.target == "none":
            return
        if incident.target == "tenant":
            self.paused_tenants.add(incident.tenant_id)
        else:
            self.paused_keys.add(incident.target_key)
        anomaly = self.result.match(incident)
        at = (anomaly.end if anomaly else incident.opened_at) + RESUME_AFTER_S
        self.resumes.append((at, incident))

    async def resume_due(self) -> None:
        due = [r for r in self.resumes if r[0] <= self.now]
        self.resumes = [r for r in self.resumes if r[0] > self.now]
        for _, incident in due:  # what POST /admin/v1/anomalies/{id}/resolve does
            if incident.target == "tenant":
                self.paused_tenants.discard(incident.tenant_id)
            else:
                self.paused_keys.discard(incident.target_key)
            self.result.resolved += await self.watch.resolve(incident)


async def _seed(store: TenancyStore, tenants: list[TenantProfile], plan: str) -> None:
    tenancy = Tenancy(store, b"farebox-simulate", {plan: None})
    for profile in tenants:
        await tenancy.create_tenant(profile.tenant, None, plan)
        for key_id in profile.keys:
            await store.create_key(
                ApiKey(id=key_id, key_hash=f"sim:{key_id}", kind="tenant", name="sim",
                       created_at=START - 90 * DAY, tenant_id=profile.tenant)
            )  # fmt: skip


def _history(
    watch: AnomalyWatch, tenants: list[TenantProfile], days: int, rng: random.Random
) -> None:
    for hour in range(START - days * DAY, START, HOUR):
        for p in tenants:
            rate = p.rate(hour, rng)
            for key_id, weight in zip(p.keys, p.weights, strict=True):
                n = poisson(rate * weight, rng)
                if n:
                    watch.add(p.tenant, key_id, hour, n, spend(n, p.cost_pico, rng))


def _minute(run: _Run, p: TenantProfile, at: int, rate: float, rng: random.Random) -> None:
    if p.tenant in run.paused_tenants:
        return
    active = [a for a in run.result.anomalies if a.tenant == p.tenant and a.active(at)]
    for key_id, weight in zip(p.keys, p.weights, strict=True):
        if key_id in run.paused_keys:
            continue
        lam, cost = rate * weight / 60, p.cost_pico
        extra = 0
        for a in active:
            if a.kind == "stuffing":
                cost = int(cost * a.factor)
            elif a.key == key_id:  # runaway and power_user loop on one key
                extra += poisson(rate / 60 * (a.factor - 1), rng)
        n = poisson(lam, rng)
        total = n + extra
        if total:
            amount = spend(total, cost, rng)
            run.watch.add(p.tenant, key_id, at, total, amount)
            run.result.requests += total
            run.result.spend += amount
            run.result.daily[p.tenant][(at - START) // DAY] += total


async def simulate(
    settings: Settings,
    *,
    tenants: int = 50,
    ramps: int = 5,
    days: int = 7,
    history_days: int = 30,
    kinds: list[str] | None = None,
    anomalies: list[Anomaly] | None = None,
    seed: int = 1,
    page: bool = False,
    store: Store | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Run one simulation with ``settings``'s anomaly detection (see the module docstring).
    ``progress(hours, of)`` is called as each live hour starts, and once at the end."""
    rng = random.Random(seed)
    cast = profiles(tenants, ramps, START, days, rng)
    plan = settings.file.default_plan or "default"
    store = store or MemoryStore()
    await store.open()
    http = HttpClient()
    cfg = settings.file
    webhook_url = cfg.budgets.alert_webhook_url if page else None
    webhook = WebhookAlerts(webhook_url, settings.alert_secret, http) if webhook_url else None
    quiet = settings if page else settings.model_copy(update={"paging_secrets": {}})
    clock_box = [float(START)]
    watch = make_watch(quiet, store, http, webhook, lambda: clock_box[0])
    policy = watch.policy(plan)
    result = SimResult(tenants, ramps, days, history_days, policy.window_s)
    result.anomalies = anomalies if anomalies is not None else schedule(
        cast, list(KINDS if kinds is None else kinds), START, days, rng
    )  # fmt: skip
    result.daily = {p.tenant: [0] * days for p in cast}
    run = _Run(watch, result)
    try:
        await _seed(store, cast, plan)
        _history(watch, cast, history_days, rng)
        await watch.flush()
        await _live(run, cast, days, cfg.anomaly.check_interval_s, rng, clock_box, progress)
        await watch.flush()
    finally:
        await watch.pager.aclose(cfg.anomaly.drain_s)
        if webhook is not None:
            await webhook.aclose(cfg.anomaly.drain_s)
        await http.aclose()
        await store.close()
    return result


async def _live(
    run: _Run,
    cast: list[TenantProfile],
    days: int,
    check_s: float,
    rng: random.Random,
    clock_box: list[float],
    progress: Callable[[int, int], None] | None,
) -> None:
    next_check = START + check_s
    rates: dict[str, float] = {}
    for at in range(START, START + days * DAY, MINUTE):
        if at % HOUR == 0:
            rates = {p.tenant: p.rate(at, rng) for p in cast}
            await asyncio.sleep(0)  # let alert deliveries go out
            if progress is not None:
                progress((at - START) // HOUR, days * DAY // HOUR)
        for p in cast:
            _minute(run, p, at, rates[p.tenant], rng)
        run.now = clock_box[0] = at + MINUTE
        if run.now >= next_check:
            next_check += check_s
            for incident in await run.watch.check():
                run.opened(incident)
        await run.resume_due()
    if progress is not None:
        progress(days * DAY // HOUR, days * DAY // HOUR)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def report(result: SimResult) -> str:
    """The human-readable summary ``farebox simulate`` prints."""
    ttp = sorted(t / 60 for t in result.times_to_pause_s())
    lines = [
        f"Simulated {result.tenants} established and {result.ramps} onboarding tenants for "
        f"{result.days} days after {result.history_days} days of history: "
        f"{result.requests:,} requests, {display_usd(result.spend)}",
        f"anomalies injected: {len(result.anomalies)}, detected: "
        f"{sum(1 for a in result.anomalies if result.detection(a))}; incidents: "
        f"{len(result.incidents)}, false positives: {len(result.false_positives)}",
        f"precision {_ratio(result.precision())}  recall {_ratio(result.recall())}  "
        + (
            f"time to pause: min {ttp[0]:.0f} min, median {statistics.median(ttp):.0f} min, "
            f"max {ttp[-1]:.0f} min"
            if ttp
            else "time to pause: n/a"
        ),
    ]
    if result.anomalies:
        lines.append("")
        lines.append(f"{'kind':<11} {'tenant':<7} {'start (UTC)':<17} {'hours':>5}  "
                     f"{'factor':>6}  {'paused after':>12}  metric")  # fmt: skip
        for a in result.anomalies:
            found = result.detection(a)
            after = f"{(found.opened_at - a.start) / 60:.0f} min" if found else "missed"
            lines.append(
                f"{a.kind:<11} {a.tenant:<7} {_when(a.start):<17} "
                f"{(a.end - a.start) / HOUR:>5.0f}  {a.factor:>5.0f}x  {after:>12}  "
                f"{found.metric if found else '-'}"
            )
    for incident in result.false_positives:
        lines.append(
            f"false positive: {incident.tenant_id} at {_when(incident.opened_at)} "
            f"({incident.metric} {incident.observed} vs baseline {incident.baseline})"
        )
    return "\n".join(lines)


def result_json(result: SimResult) -> dict[str, Any]:
    return {
        "tenants": result.tenants,
        "onboarding": result.ramps,
        "days": result.days,
        "history_days": result.history_days,
        "requests": result.requests,
        "spend_usd": format_usd(result.spend),
        "precision": result.precision(),
        "recall": result.recall(),
        "false_positives": len(result.false_positives),
        "times_to_pause_s": result.times_to_pause_s(),
        "anomalies": [
            {
                "kind": a.kind,
                "tenant": a.tenant,
                "start": a.start,
                "end": a.end,
                "factor": a.factor,
                "paused_after_s": (f.opened_at - a.start) if (f := result.detection(a)) else None,
            }
            for a in result.anomalies
        ],  # fmt: skip
        "incidents": [
            {
                "id": i.id,
                "tenant": i.tenant_id,
                "key": i.key_id or None,
                "metric": i.metric,
                "opened_at": i.opened_at,
                "matched": result.match(i) is not None,
                "dedup_key": i.dedup_key,
            }
            for i in result.incidents
        ],  # fmt: skip
    }
