"""Gauges read at scrape time: breaker state per deployment, billing export lag, pending
entries and dead letters per sink, budget utilisation, open anomaly incidents.

The state is read (asynchronously, by the ``read`` function the wiring hands in) into a
``Snapshot`` just before a scrape renders the page; ``ScrapeGauges.collect`` then yields
gauges from that snapshot, synchronously, as prometheus-client asks. A read is reused for
``min_interval_s``, so scrapes in a burst (several Prometheus servers, a dashboard) read the
stores once. Nothing here runs per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from farebox.core.money import PICO_PER_USD

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True, slots=True)
class SinkState:
    sink: str
    pending: int  # ledger entries not yet exported (counted up to the exporter's bound)
    lag_s: float  # age of the oldest of them
    dead: int  # dead letters waiting


@dataclass(frozen=True, slots=True)
class BudgetState:
    scope: str
    period: str
    name: str  # "" when unnamed
    tenant: str  # "" for a global budget
    used: int  # pico-USD, settled spend and holds in flight
    limit: int  # pico-USD


@dataclass(frozen=True, slots=True)
class Snapshot:
    breakers: dict[str, int] = field(default_factory=dict)  # deployment -> 0/1/2
    sinks: tuple[SinkState, ...] = ()
    budgets: tuple[BudgetState, ...] = ()
    incidents: dict[str, int] = field(default_factory=dict)  # tenant -> open incidents


Read = Callable[[], Awaitable[Snapshot]]


class ScrapeGauges(Collector):
    """A prometheus-client collector over the last ``Snapshot`` read."""

    def __init__(
        self,
        read: Read,
        *,
        tenant_labels: bool = False,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._tenant_labels = tenant_labels
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._snapshot = Snapshot()
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the state again, unless the last read is recent enough."""
        async with self._lock:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._min_interval_s:
                return
            self._snapshot = await self._read()
            self._read_at = self._clock()

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot
        yield from _breakers(snap)
        yield from _sinks(snap)
        yield from _budgets(snap, self._tenant_labels)
        yield from _incidents(snap, self._tenant_labels)


def _breakers(snap: Snapshot) -> Iterator[Metric]:
    gauge = GaugeMetricFamily(
        "farebox_deployment_breaker_state",
        "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
        labels=["deployment"],
    )
    for deployment, state in sorted(snap.breakers.items()):
        gauge.add_metric([deployment], state)
    yield gauge


def _sinks(snap: Snapshot) -> Iterator[Metric]:
    pending = GaugeMetricFamily("farebox_export_pending_entries",
                                "Ledger entries not yet exported, per billing sink.",
                                labels=["sink"])  # fmt: skip
    lag = GaugeMetricFamily("farebox_export_lag_seconds",
                            "Age of the oldest ledger entry not yet exported, per billing sink.",
                            labels=["sink"])  # fmt: skip
    dead = GaugeMetricFamily("farebox_export_dead_letters",
                             "Events a billing sink refused for good, waiting to be retried.",
                             labels=["sink"])  # fmt: skip
    for sink in snap.sinks:
        pending.add_metric([sink.sink], sink.pending)
        lag.add_metric([sink.sink], sink.lag_s)
        dead.add_metric([sink.sink], sink.dead)
    yield from (pending, lag, dead)


def _budgets(snap: Snapshot, tenant_labels: bool) -> Iterator[Metric]:
    labels = ["scope", "period", "name", *(["tenant"] if tenant_labels else [])]
    ratio = GaugeMetricFamily("farebox_budget_utilisation_ratio",
                              "Share of a budget spent or held (1 = exhausted).",
                              labels=labels)  # fmt: skip
    used = GaugeMetricFamily("farebox_budget_used_usd", "Spent and held of a budget, USD.",
                             labels=labels)  # fmt: skip
    limit = GaugeMetricFamily("farebox_budget_limit_usd", "A budget's limit, USD.",
                              labels=labels)  # fmt: skip
    for b in snap.budgets:
        if b.tenant and not tenant_labels:
            continue
        values = [b.scope, b.period, b.name, *([b.tenant] if tenant_labels else [])]
        ratio.add_metric(values, b.used / b.limit if b.limit > 0 else 1.0)
        used.add_metric(values, b.used / PICO_PER_USD)
        limit.add_metric(values, b.limit / PICO_PER_USD)
    yield from (ratio, used, limit)


def _incidents(snap: Snapshot, tenant_labels: bool) -> Iterator[Metric]:
    total = GaugeMetricFamily("farebox_anomaly_incidents_open",
                              "Anomaly incidents open (tenants or keys paused by the watch).",
                              labels=["tenant"] if tenant_labels else None)  # fmt: skip
    if tenant_labels:
        for tenant, count in sorted(snap.incidents.items()):
            total.add_metric([tenant], count)
    else:
        total.add_metric([], sum(snap.incidents.values()))
    yield total
