"""The gauges read at scrape time: what a snapshot shows, with and without tenant labels, and
a burst of scrapes reading the stores once."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from farebox.observe.metrics import RequestMetrics, fan_out
from farebox.observe.metrics_scrape import BudgetState, ScrapeGauges, SinkState, Snapshot

SNAPSHOT = Snapshot(
    breakers={"sim/gpt-4o-mini": 0, "bad/gpt-4o": 2},
    sinks=(SinkState("stripe", 12, 3.5, 2),),
    budgets=(
        BudgetState("global", "month", "", "", 250 * 10**12, 1000 * 10**12),
        BudgetState("tenant", "month", "team", "acme", 5 * 10**12, 50 * 10**12),
    ),
    incidents={"acme": 1, "beta": 2},
)


def page_of(gauges: ScrapeGauges) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(gauges)
    page = generate_latest(registry).decode()
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(page)
    }


async def read_once() -> Snapshot:
    return SNAPSHOT


async def test_a_snapshot_without_tenant_labels() -> None:
    gauges = ScrapeGauges(read_once)
    await gauges.refresh()
    got = page_of(gauges)
    assert sorted(got["farebox_deployment_breaker_state"], key=lambda s: s[1]) == [
        ({"deployment": "sim/gpt-4o-mini"}, 0.0),
        ({"deployment": "bad/gpt-4o"}, 2.0),
    ]
    assert got["farebox_export_pending_entries"] == [({"sink": "stripe"}, 12.0)]
    assert got["farebox_export_lag_seconds"] == [({"sink": "stripe"}, 3.5)]
    assert got["farebox_export_dead_letters"] == [({"sink": "stripe"}, 2.0)]
    only_global = {"scope": "global", "period": "month", "name": ""}
    assert got["farebox_budget_utilisation_ratio"] == [(only_global, 0.25)]
    assert got["farebox_budget_used_usd"] == [(only_global, 250.0)]
    assert got["farebox_anomaly_incidents_open"] == [({}, 3.0)]


async def test_a_snapshot_with_tenant_labels() -> None:
    gauges = ScrapeGauges(read_once, tenant_labels=True)
    await gauges.refresh()
    got = page_of(gauges)
    ratio = {s[0]["tenant"]: s[1] for s in got["farebox_budget_utilisation_ratio"]}
    assert ratio == {"": 0.25, "acme": 0.1}
    assert dict((s[0]["tenant"], s[1]) for s in got["farebox_anomaly_incidents_open"]) == {
        "acme": 1.0,
        "beta": 2.0,
    }


async def test_scrapes_in_a_burst_read_once() -> None:
    now = [100.0]
    reads: list[float] = []

    async def read() -> Snapshot:
        reads.append(now[0])
        return SNAPSHOT

    gauges = ScrapeGauges(read, min_interval_s=5.0, clock=lambda: now[0])
    for step in (0.0, 1.0, 3.9, 1.0, 0.5):  # at 100, 101, 104.9, 105.9, 106.4
        now[0] += step
        await gauges.refresh()
    assert reads == [100.0, 105.9]


def test_fan_out_calls_each_observer_given() -> None:
    seen: list[tuple[str, Any, str]] = []

    def observer(name: str) -> Any:
        return lambda entry, plan: seen.append((name, entry, plan))

    a, b, c = observer("a"), observer("b"), observer("c")
    assert fan_out(None, None) is None
    assert fan_out(None, a, None) is a  # one on: no wrapper at all
    both, every = fan_out(a, None, b), fan_out(a, b, c)
    assert both is not None and every is not None
    both("e1", "pro")
    every("e2", "free")
    assert seen == [("a", "e1", "pro"), ("b", "e1", "pro"), *(
        (n, "e2", "free") for n in "abc")]  # fmt: skip


def test_every_app_has_its_own_registry() -> None:
    first, second = RequestMetrics(), RequestMetrics()
    assert first.registry is not second.registry
    names = {m.name for m in first.registry.collect()}
    assert {"farebox_requests", "farebox_gateway_overhead_seconds"} <= names
