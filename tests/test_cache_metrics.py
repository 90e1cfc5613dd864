"""Issue 12, "Seen" (Prometheus): the response cache's counters, from the ledger entries the
metrics already observe: ``farebox_cache_hits_total{kind}``, ``farebox_cache_misses_total``,
``farebox_cache_bypass_total``, ``farebox_cache_saved_usd_total`` (the tenant label only with
``metrics.tenant_labels``), and ``farebox_cache_events_total{event}`` fed by
``RequestMetrics.cache_event``. The page parses with prometheus-client's own parser."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from farebox.api.application import build_app
from farebox.app import wire
from farebox.config.settings import parse_settings
from farebox.core.cache import BYPASS, HIT_EXACT, HIT_SEMANTIC, HIT_STATUS, MISS
from farebox.core.money import PICO_PER_USD
from farebox.observe.metrics import CACHE_EVENTS, RequestMetrics
from tests.contracts.builders import entry

CACHE_VALUES = (HIT_EXACT, HIT_SEMANTIC, MISS, BYPASS, None)
KIND = {HIT_EXACT: "exact", HIT_SEMANTIC: "semantic"}
FAMILIES = ("farebox_cache_hits", "farebox_cache_misses", "farebox_cache_bypass",
            "farebox_cache_saved_usd", "farebox_cache_events")  # fmt: skip


def cache_entry(i: int, tenant: str, cache: str | None, saved: int) -> Any:
    hit = cache in KIND
    return entry(f"r{i}", tenant_id=tenant, cache=cache, saved=saved if hit else 0,
                 status=HIT_STATUS if hit else "ok")  # fmt: skip


def scrape(metrics: RequestMetrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Every ``_total`` sample of the cache families, by family."""
    page = generate_latest(metrics.registry).decode()
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(page):
        if family.name in FAMILIES:
            rows = [(s.name, s.labels, s.value) for s in family.samples]
            out[family.name] = [r for r in rows if r[0].endswith("_total")]
    return out


DRAWN = st.lists(
    st.tuples(
        st.sampled_from(["acme", "beta", "gamma"]),
        st.sampled_from(CACHE_VALUES),
        st.integers(0, 10**13),
    ),  # fmt: skip
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(drawn=DRAWN, tenant_labels=st.booleans())
def test_the_counters_agree_with_the_entries(
    drawn: list[tuple[str, str | None, int]], tenant_labels: bool
) -> None:
    metrics = RequestMetrics(tenant_labels=tenant_labels)
    for i, (tenant, cache, saved) in enumerate(drawn):
        metrics.observe(cache_entry(i, tenant, cache, saved), "pro")
    got = scrape(metrics)

    def who(tenant: str) -> tuple[str, ...]:
        return (tenant,) if tenant_labels else ()

    hits: Counter[tuple[str, ...]] = Counter()
    misses: Counter[tuple[str, ...]] = Counter()
    bypass: Counter[tuple[str, ...]] = Counter()
    saved_usd: Counter[tuple[str, ...]] = Counter()
    for tenant, cache, saved in drawn:
        if cache in KIND:
            hits[(KIND[cache], *who(tenant))] += 1
            saved_usd[who(tenant)] += saved
        elif cache == MISS:
            misses[who(tenant)] += 1
        elif cache == BYPASS:
            bypass[who(tenant)] += 1
    extra = ("tenant",) if tenant_labels else ()

    def seen(name: str, labels: tuple[str, ...]) -> Counter[tuple[str, ...]]:
        return Counter({tuple(lb[n] for n in labels): v for _, lb, v in got[name] if v})

    assert seen("farebox_cache_hits", ("kind", *extra)) == hits
    assert seen("farebox_cache_misses", extra) == misses
    assert seen("farebox_cache_bypass", extra) == bypass
    saved_seen = seen("farebox_cache_saved_usd", extra)
    assert set(saved_seen) == {k for k, v in saved_usd.items() if v}
    for k, pico in saved_usd.items():
        assert saved_seen.get(k, 0.0) == pytest.approx(pico / PICO_PER_USD, rel=1e-9)
    for _, labels, _ in [r for rows in got.values() for r in rows]:
        assert ("tenant" in labels) == (tenant_labels and "event" not in labels)


def test_cache_events_are_counted_and_unknown_ones_are_other() -> None:
    metrics = RequestMetrics()
    events = scrape(metrics)["farebox_cache_events"]
    assert {lb["event"]: v for _, lb, v in events} == dict.fromkeys((*CACHE_EVENTS, "other"), 0)
    for event in ("error", "error", "stored", "evicted", "skipped", "vetoed", "bogus"):
        metrics.cache_event(event)
    counted = {lb["event"]: v for _, lb, v in scrape(metrics)["farebox_cache_events"]}
    assert counted == {"error": 2, "skipped": 1, "vetoed": 1, "stored": 1, "evicted": 1,
                       "other": 1}  # fmt: skip
    assert set(CACHE_EVENTS) == {"error", "skipped", "vetoed", "stored", "evicted"}


@asynccontextmanager
async def served(tmp_path: Path, tenant_labels: bool) -> AsyncIterator[tuple[Any, Any]]:
    data = {"database": "memory", "metrics": {"tenant_labels": tenant_labels},
            "logging": {"access_log": False}}  # fmt: skip
    env = {"FAREBOX_ADMIN_KEY": "fba_cache_metrics_admin_key_0123456789"}
    wiring = wire(parse_settings(data, source="t.yaml", env=env, base_dir=tmp_path), None, {},
                  time.time)  # fmt: skip
    app = build_app(wiring, lambda _m: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield wiring.metrics, client


@pytest.mark.parametrize("tenant_labels", [False, True])
async def test_get_metrics_serves_the_cache_families(tmp_path: Path, tenant_labels: bool) -> None:
    async with served(tmp_path, tenant_labels) as (metrics, client):
        assert metrics is not None
        metrics.observe(cache_entry(1, "acme", HIT_EXACT, 2_500_000_000_000), "pro")
        metrics.observe(cache_entry(2, "acme", HIT_SEMANTIC, 500_000_000_000), "pro")
        metrics.observe(cache_entry(3, "beta", MISS, 0), "pro")
        metrics.observe(cache_entry(4, "beta", None, 0), "pro")  # a plan without a cache
        metrics.cache_event("evicted")
        page = (await client.get("/metrics")).text
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(page)
        for s in f.samples
        if f.name in FAMILIES and s.name.endswith("_total")
    }
    acme = (("tenant", "acme"),) if tenant_labels else ()
    beta = (("tenant", "beta"),) if tenant_labels else ()
    assert found[("farebox_cache_hits_total", tuple(sorted((("kind", "exact"), *acme))))] == 1
    assert found[("farebox_cache_hits_total", tuple(sorted((("kind", "semantic"), *acme))))] == 1
    assert found[("farebox_cache_misses_total", beta)] == 1
    assert found[("farebox_cache_saved_usd_total", acme)] == pytest.approx(3.0)
    assert found[("farebox_cache_events_total", (("event", "evicted"),))] == 1
    assert sum(v for (name, _), v in found.items() if name == "farebox_cache_bypass_total") == 0
