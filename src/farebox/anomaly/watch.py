"""Anomaly auto-pause: count traffic per key, find tenants and keys far above their baseline,
pause them as their plan says, and page a human.

- **Counting** (the request path): ``observe`` adds a ledger entry to an in-memory minute
  cell, a few dictionary operations. A background task flushes the cells to the store
  every ``flush_interval_s``, so every worker and replica counts into the same rows.
- **Checking** (every ``check_interval_s``, in every process): the store's minute rows of
  the recent window give each tenant's and key's rate; only a subject above the minimum
  volume has its hourly history read (once an hour) and its baseline computed
  (``core.anomaly``). The store's ``open_incident`` makes the pause and the page happen
  once per tenant, however many processes see it at once.
- **Resolving**: resuming a tenant or key resolves its open incidents and sends PagerDuty
  ``resolve`` with the same ``dedup_key``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

from farebox.anomaly.history import HistoryCache
from farebox.anomaly.paging import Pager
from farebox.anomaly.rounds import Rounds
from farebox.core.anomaly import (
    DAY,
    HOUR,
    MINUTE,
    Incident,
    Policy,
    Rate,
    TrafficRow,
    Verdict,
    age_hours,
    assess,
    baseline,
    hour_of,
    projected,
    quiet_limit,
    window_start,
)
from farebox.core.keys import JWT_KEY_PREFIX
from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry, Tenant
from farebox.notify.formats import summary
from farebox.stores.base import AccountStore, HasTraffic
from farebox.stores.multiplication import sighting_store
from farebox.stores.pausing import pauses_of

log = logging.getLogger("farebox.anomaly")  # the name operators filter on
MINUTES_KEPT = 2 * HOUR


def pause_mark(incident_id: str) -> str:
    """How a pause's reason names the incident that made it (resolving resumes only those)."""
    return f"(incident {incident_id})"


TARGETS: dict[str, Literal["tenant", "key", "none"]] = {
    "pause_tenant": "tenant", "pause_key": "key", "alert": "none",
}  # fmt: skip


def _larger(a: Rate, b: Rate) -> Rate:
    return Rate(max(a.requests, b.requests), max(a.spend, b.spend))


def _loud(rate: Rate, p: Policy) -> bool:
    """Loud enough to be worth a baseline: at the minimum volume on some metric."""
    return _loud_against(rate, Rate(p.min_requests_per_hour, p.min_spend_per_hour))


def _loud_against(rate: Rate, minimum: Rate) -> bool:
    return rate.requests >= minimum.requests or rate.spend >= minimum.spend


def _sums(rows: list[TrafficRow]) -> tuple[int, int]:
    requests = spend = 0
    for row in rows:
        requests += row.requests
        spend += row.spend
    return requests, spend


def _rate(rows: list[TrafficRow], now: float, window_s: int) -> Rate:
    """The hourly rate of a tenant's window sums."""
    return projected(Rate(*_sums(rows)), now, window_s)


class WatchStore(AccountStore, HasTraffic, Protocol):
    """What the watch uses: traffic and incidents, and the tenants and keys it pauses."""


class AnomalyWatch:
    def __init__(
        self,
        store: WatchStore,
        policies: Mapping[str, Policy],
        default: Policy,
        pager: Pager,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval_s: float = 5.0,
        check_interval_s: float = 60.0,
    ) -> None:
        self._store = store
        self._policies = dict(policies)
        self._default = default
        self._pager = pager
        self._clock = clock
        self._cells: dict[tuple[str, str, int], list[int]] = {}
        self._hour = -1
        self._normal: dict[tuple[str, str], Rate] = {}  # baselines, for this hour
        # per tenant, for this hour: below this total (window, limit, keys covered) neither
        # the tenant nor any of those keys can be flagged, so the check costs no store read
        self._quiet: dict[str, tuple[int, Rate, frozenset[str]]] = {}
        self._young: set[str] = set()  # tenants still learning (this hour): alert, never pause
        self._histories = HistoryCache(store.traffic)
        self._rounds = Rounds(
            self.check,
            self.flush,
            check_s=check_interval_s,
            flush_s=flush_interval_s,
            what="anomaly detection",
        )

    @property
    def pager(self) -> Pager:
        return self._pager

    @property
    def enabled(self) -> bool:
        return self._default.enabled or any(p.enabled for p in self._policies.values())

    def reload(self, policies: Mapping[str, Policy], default: Policy) -> None:
        self._policies = dict(policies)
        self._default = default
        self._hour = -1  # baselines and quiet limits follow the new policies from now on

    def policy(self, plan: str) -> Policy:
        return self._policies.get(plan, self._default)

    # counting: the request path ---------------------------------------------------------
    def observe(self, entry: LedgerEntry, plan: str = "") -> None:
        self.add(entry.tenant_id, entry.key_id, entry.started_at, 1, entry.cost)

    def add(self, tenant_id: str, key_id: str, at: float, requests: int, spend: int) -> None:
        """Count ``requests`` costing ``spend`` in all at ``at`` (one ledger entry, a flush
        to retry, or the simulator's feed)."""
        cell = self._cells.setdefault((tenant_id, key_id, int(at) // MINUTE * MINUTE), [0, 0])
        cell[0] += requests
        cell[1] += spend

    async def flush(self) -> None:
        cells, self._cells = self._cells, {}
        if not cells:
            return
        rows = [TrafficRow(t, k, s, v[0], v[1]) for (t, k, s), v in cells.items()]
        try:
            await self._store.traffic.add(rows)
        except Exception:
            for row in rows:  # keep them for the next flush
                self.add(row.tenant_id, row.key_id, row.start, row.requests, row.spend)
            raise

    # checking ---------------------------------------------------------------------------
    async def check(self) -> list[Incident]:
        """Flush, then look at every tenant with recent traffic; return incidents opened."""
        await self.flush()
        now = self._clock()
        await self._new_hour(now)
        enabled = [p for p in [self._default, *self._policies.values()] if p.enabled]
        if not enabled:
            return []
        quietest = Rate(
            min(p.min_requests_per_hour for p in enabled),
            min(p.min_spend_per_hour for p in enabled),
        )
        windows: dict[int, dict[str, list[TrafficRow]]] = {}
        for window_s in sorted({p.window_s for p in enabled}, reverse=True):  # longest first
            grouped = windows[window_s] = {}
            for row in await self._store.traffic.totals_since(window_start(now, window_s)):
                grouped.setdefault(row.tenant_id, []).append(row)
        longest = next(iter(windows.values()))
        # the longest window's count over the shortest window's span bounds every plan's rate
        span = max(int(now) - window_start(now, min(windows)), MINUTE)
        opened = []
        for tenant_id in sorted(longest):
            requests, spend = _sums(longest[tenant_id])
            bound = Rate(requests * HOUR // span, spend * HOUR // span)
            if not _loud_against(bound, quietest):
                continue  # below every plan's minimum volume: not worth a store read
            if self._known_quiet(tenant_id, windows, now):
                continue
            tenant = await self._store.get_tenant(tenant_id)
            if tenant is None or tenant.paused:
                continue
            p = self.policy(tenant.plan)
            rows = windows.get(p.window_s, {}).get(tenant_id)
            if p.enabled and rows:
                incident = await self._check_tenant(tenant, rows, now, p)
                if incident is not None:
                    opened.append(incident)
        return opened

    def _known_quiet(
        self, tenant_id: str, windows: dict[int, dict[str, list[TrafficRow]]], now: float
    ) -> bool:
        known = self._quiet.get(tenant_id)
        if known is None:
            return False
        window_s, limit, covered = known
        rows = windows.get(window_s, {}).get(tenant_id, [])
        if any(r.key_id not in covered for r in rows):
            return False
        total = _rate(rows, now, window_s)  # every key's rate is at most its tenant's
        return total.requests <= limit.requests and total.spend <= limit.spend

    async def _new_hour(self, now: float) -> None:
        hour = hour_of(now)
        if hour == self._hour:
            return
        self._hour = hour
        self._normal.clear()
        self._quiet.clear()
        self._young.clear()
        self._histories.forget_idle(hour)
        days = max(p.history_days for p in [self._default, *self._policies.values()])
        await self._store.traffic.prune(int(now) - MINUTES_KEPT, hour - (days + 1) * DAY)

    async def _baselines(
        self, tenant_id: str, keys: list[str], now: float, p: Policy
    ) -> dict[str, Rate]:
        """The tenant's baseline (under ``""``) and its keys', computed once an hour."""
        wanted = ["", *keys]
        if any((tenant_id, k) not in self._normal for k in wanted):
            history = await self._histories.get(tenant_id, hour_of(now), p.history_days)
            normal = self._normal[(tenant_id, "")] = baseline(history.series(), now, p)
            if age_hours(history.series(), now) < p.learning_hours:
                self._young.add(tenant_id)
            for key_id in keys:
                own = history.series(key_id)
                key_normal = baseline(own, now, p)
                if age_hours(own, now) < p.learning_hours:
                    key_normal = _larger(key_normal, normal)  # a new key inherits its tenant's
                self._normal[(tenant_id, key_id)] = key_normal
        return {k: self._normal[(tenant_id, k)] for k in wanted}

    async def _check_tenant(
        self, tenant: Tenant, rows: list[TrafficRow], now: float, p: Policy
    ) -> Incident | None:
        """``rows``: the tenant's window sums, one per key."""
        tenant_id = tenant.id
        keys = {r.key_id: projected(Rate(r.requests, r.spend), now, p.window_s) for r in rows}
        rate = _rate(rows, now, p.window_s)
        if not _loud(rate, p):
            return None  # no key can be louder than its tenant
        loud = [k for k, r in keys.items() if _loud(r, p)]
        normal = await self._baselines(tenant_id, list(keys), now, p)
        limits = [quiet_limit(n, p) for n in normal.values()]
        limit = Rate(min(q.requests for q in limits), min(q.spend for q in limits))
        self._quiet[tenant_id] = (p.window_s, limit, frozenset(keys))
        busiest = max(keys, key=lambda k: keys[k].spend)
        verdict = assess(rate, normal[""], p)
        if verdict is not None:
            return await self._open(tenant, "", busiest, verdict, rate, p, now)
        for key_id in sorted(loud, key=lambda k: -keys[k].requests):
            verdict = assess(keys[key_id], normal[key_id], p)
            if verdict is not None:
                if key_id.startswith(JWT_KEY_PREFIX):  # never stored: the tenant's callers
                    return await self._open(tenant, key_id, key_id, verdict, keys[key_id], p, now)
                key = await self._store.get_key(key_id)
                if key is not None and not key.paused:
                    return await self._open(tenant, key_id, key_id, verdict, keys[key_id], p, now)
        return None

    async def _open(
        self,
        tenant: Tenant,
        key_id: str,
        busiest: str,
        verdict: Verdict,
        rate: Rate,
        p: Policy,
        now: float,
    ) -> Incident | None:
        learning = tenant.id in self._young
        target = "none" if learning else TARGETS[p.action]
        # a JWT caller's key (``jwt:<tenant>``) is not stored and cannot be paused: pausing the
        # tenant is the only way to stop a flood of tokens
        escalated = target == "key" and busiest.startswith(JWT_KEY_PREFIX)
        target = "tenant" if escalated else target
        incident_id = f"anom_{uuid.uuid4().hex[:20]}"
        incident = Incident(
            id=incident_id,
            tenant_id=tenant.id,
            key_id=key_id,
            target=target,
            target_key=busiest if target == "key" else "",
            metric=verdict.metric,
            observed=verdict.observed,
            baseline=verdict.baseline,
            threshold=verdict.threshold,
            opened_at=now,
            dedup_key=f"farebox/anomaly/{tenant.id}/{incident_id}",
            detail={
                "plan": tenant.plan,
                "window_s": p.window_s,
                "threshold_pct": p.threshold_pct,
                "requests_per_hour": rate.requests,
                "spend_usd_per_hour": format_usd(rate.spend),
                "learning": learning,  # too little history to pause on: alert only
                "escalated": escalated,  # pause_key on a JWT caller's key: the tenant paused
            },
        )
        if not await self._store.traffic.open_incident(incident, now - p.cooldown_s):
            return None  # another process got there first, or the tenant is in cooldown
        log.warning("%s", summary(incident))
        try:
            await self._pause(incident)
        finally:
            self._pager.triggered(incident)  # paged even when the pause failed
        return incident

    async def _pause(self, incident: Incident) -> None:
        """Pause what ``incident`` targets, unless it is paused already (an operator's pause
        landing after the round read it stays: the store's conditional pause, one step) or
        deleted since."""
        reason = (
            f"automatic pause on a traffic anomaly {pause_mark(incident.id)}: {summary(incident)}"
        )
        if incident.target == "none":
            return
        ident = incident.tenant_id if incident.target == "tenant" else incident.target_key
        if not await pauses_of(self._store).pause_unpaused(incident.target, ident, reason):
            log.warning("incident %s: its %s is paused already or gone, not paused again",
                        incident.id, incident.target)  # fmt: skip

    # resolving --------------------------------------------------------------------------
    async def resumed(self, tenant_id: str, key_id: str | None = None) -> list[Incident]:
        """A tenant (or one key) was resumed: resolve the incidents that paused it."""
        open_ = await self._store.traffic.incidents(tenant_id, open_only=True)
        if key_id is None:
            ids = [i.id for i in open_ if i.target in ("tenant", "none")]
        else:
            ids = [i.id for i in open_ if i.target == "key" and i.target_key == key_id]
        return await self._resolve(ids)

    async def resolve(self, incident: Incident) -> list[Incident]:
        """Resolve one incident by hand, resuming what it paused."""
        if incident.metric == "account_multiplication":  # issue 15: every tenant or key
            await self._resume_listed(incident)
        elif incident.target in ("tenant", "key"):  # only while the pause is still its own
            ident = incident.tenant_id if incident.target == "tenant" else incident.target_key
            await pauses_of(self._store).resume_paused_by(
                incident.target, ident, pause_mark(incident.id)
            )
        return await self._resolve([incident.id])

    async def _resume_listed(self, incident: Incident) -> None:
        """Resume what an account-multiplication incident paused (``anomaly.
        multiplication``): the tenants and keys it lists, and those it paused later (its
        clients' and their linked clients', since the window before it opened), each only
        while its pause is still this incident's (an operator's later pause, or another
        incident's, stays): the store's conditional resume, one step per tenant or key."""
        tenants = [str(t) for t in incident.detail.get("paused_tenants") or []]
        keys = [str(k) for k in incident.detail.get("paused_keys") or []]
        sightings = sighting_store(self._store)
        clients = incident.detail.get("clients") or [incident.detail.get("client", "")]
        since = incident.opened_at - float(incident.detail.get("window_s") or 0)
        group = dict.fromkeys(str(c) for c in clients if c)
        rows = []
        if sightings is not None:
            for client in list(group):
                group.update(dict.fromkeys(await sightings.linked(client, since)))
            rows = [r for client in group for r in await sightings.sightings(client, since)]
        for row in rows:
            tenants.append(row.tenant_id)
            if row.key_id.startswith(JWT_KEY_PREFIX):  # paused as its tenant
                tenants.append(row.key_id[len(JWT_KEY_PREFIX) :])
            else:
                keys.append(row.key_id)
        pauses = pauses_of(self._store)
        mark = pause_mark(incident.id)
        for tenant_id in dict.fromkeys(tenants):
            await pauses.resume_paused_by("tenant", tenant_id, mark)
        for key_id in dict.fromkeys(keys):
            await pauses.resume_paused_by("key", key_id, mark)

    async def _resolve(self, ids: list[str]) -> list[Incident]:
        if not ids:
            return []
        done = await self._store.traffic.resolve_incidents(ids, self._clock())
        for incident in done:
            self._pager.resolved(incident)
        return done

    # the background loop ----------------------------------------------------------------
    def start(self) -> None:
        if self.enabled:
            self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()
