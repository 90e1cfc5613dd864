"""Prometheus metrics of the request path, counted from each request's ledger entry.

``RequestMetrics`` owns one app's ``CollectorRegistry`` (never the process-wide ``REGISTRY``)
and its per-request families. ``observe(entry, plan)`` is called once per ledger entry
(``gateway.metering.Metering.finished``); it looks the entry's label tuple up in a dict of
pre-bound children, so a request costs a few increments and histogram observations, O(1).

Money counters are in USD, converted from the ledger's exact pico-USD integers as floats: they
are for charts and alerts. The exact figures are the ledger's (``farebox usage``, the admin
API, the billing export).

Guardrail findings (issue 15) are counted from the entry's ``guardrails``:
``farebox_guardrail_findings_total{detector,category,action}`` per finding and
``farebox_guardrail_requests_total{outcome}`` per request with findings (outcome: the most
severe action, blocked > redacted > flagged), with the tenant label only when
``metrics.tenant_labels`` is on. Label values are bounded: a detector or action the project
does not name, or a category beyond ``MAX_CATEGORIES`` per detector (or not a plain name),
is counted as ``other``.

The response cache is counted from the same entries (``entry.cache``): hits by kind (exact,
semantic), misses, bypasses and the USD the hits saved, with the tenant label only when
``metrics.tenant_labels`` is on; the cache stage reports what no entry shows (a backend error,
a skipped or vetoed lookup, an answer stored or evicted) through ``cache_event``. The hit rate
is derived in PromQL::

    sum(rate(farebox_cache_hits_total[5m]))
      / (sum(rate(farebox_cache_hits_total[5m])) + sum(rate(farebox_cache_misses_total[5m])))

Under ``farebox serve --workers N`` prometheus-client runs in its multiprocess mode (its
``PROMETHEUS_MULTIPROC_DIR``, set by the serve command): every worker writes its counts to
its own files there, and a scrape of any worker reads them all (``scrape_registry``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from farebox.core.cache import BYPASS, HIT_EXACT, HIT_SEMANTIC, MISS
from farebox.core.guardrails import DETECTORS
from farebox.core.money import PICO_PER_USD
from farebox.core.records import LedgerEntry

LABELS = ("model", "provider", "plan", "status")
COST_LABELS = ("model", "provider", "plan")
TIMING_LABELS = ("model", "provider")
TOKEN_KINDS = ("input", "cached_input", "cache_write", "output", "reasoning")
# seconds: a whole request (and the upstream's part of it), first token of a stream
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# seconds: what the gateway adds (the DESIGN budget is 0.5 ms at c=1)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

# what the cache stage reports through ``RequestMetrics.cache_event`` (anything else: "other")
CACHE_EVENTS = ("error", "skipped", "vetoed", "stored", "evicted")
CACHE_HIT_KINDS = {HIT_EXACT: "exact", HIT_SEMANTIC: "semantic"}

Observer = Callable[[LedgerEntry, str], None]
# guardrail findings: the label values kept (anything else is "other"), most severe first
GUARD_ACTIONS = ("blocked", "redacted", "flagged")
MAX_CATEGORIES = 64  # distinct categories per detector; more are counted as "other"
MAX_CATEGORY_CHARS = 64


class _Families:
    """The per-request metric families of one registry."""

    def __init__(self, registry: CollectorRegistry, tenant: bool) -> None:
        extra = ("tenant",) if tenant else ()
        self.requests = Counter(
            "farebox_requests", "Requests metered in the ledger, by model served, provider, "
            "plan and ledger status.", [*LABELS, *extra], registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "farebox_tokens", "Tokens metered: input (the whole prompt), cached_input, "
            "cache_write, output, reasoning.", ["kind", *COST_LABELS, *extra], registry=registry,
        )  # fmt: skip
        money = [*COST_LABELS, *extra]
        self.cost = _usd(registry, "farebox_cost_usd", "What the upstreams charge", money)
        self.revenue = _usd(registry, "farebox_revenue_usd", "What the tenants are billed", money)
        self.duration = _histogram(
            registry,
            "farebox_request_duration_seconds",
            "Whole request, as the gateway saw it.",
            LATENCY_BUCKETS,
        )
        self.upstream = _histogram(
            registry,
            "farebox_upstream_duration_seconds",
            "The upstream's part of a request.",
            LATENCY_BUCKETS,
        )
        self.overhead = _histogram(
            registry,
            "farebox_gateway_overhead_seconds",
            "Added latency: request duration minus the upstream's.",
            OVERHEAD_BUCKETS,
        )
        self.ttft = _histogram(registry, "farebox_time_to_first_token_seconds",
                               "Streams: until the first token.", LATENCY_BUCKETS)  # fmt: skip
        self.cache = _CacheFamilies(registry, list(extra))
        self.guard = _GuardFamilies(registry, list(extra))


class _GuardFamilies:
    """The guardrails' counters (issue 15)."""

    def __init__(self, registry: CollectorRegistry, extra: list[str]) -> None:
        self.findings = Counter(
            "farebox_guardrail_findings", "Guardrail findings, by detector, category and "
            "action (flagged, redacted, blocked).", ["detector", "category", "action", *extra],
            registry=registry,
        )  # fmt: skip
        self.requests = Counter(
            "farebox_guardrail_requests", "Requests with guardrail findings, by outcome: "
            "blocked, redacted or flagged (the most severe action).", ["outcome", *extra],
            registry=registry,
        )  # fmt: skip


class _CacheFamilies:
    """The response cache's counters."""

    def __init__(self, registry: CollectorRegistry, extra: list[str]) -> None:
        self.hits = Counter(
            "farebox_cache_hits", "Requests answered from the response cache, by kind "
            "(exact, semantic).", ["kind", *extra], registry=registry,
        )  # fmt: skip
        self.misses = Counter("farebox_cache_misses", "Cache lookups that found nothing.",
                              extra, registry=registry)  # fmt: skip
        self.bypass = Counter(
            "farebox_cache_bypass", "Requests the cache did not look up (Cache-Control, n > 1, "
            "a temperature above the plan's, an endpoint it does not cache).", extra,
            registry=registry,
        )  # fmt: skip
        self.saved = _usd(registry, "farebox_cache_saved_usd",
                          "What the cache hits' original requests cost", extra)  # fmt: skip
        self.events = Counter(
            "farebox_cache_events", "What the cache stage did besides hits and misses: error "
            "(its backend failed; the request went on), skipped (the embedding queue was full), "
            "vetoed (a semantic hit refused), stored, evicted, other.", ["event"],
            registry=registry,
        )  # fmt: skip


def _usd(registry: CollectorRegistry, name: str, what: str, labels: list[str]) -> Counter:
    doc = f"{what}, in USD (float; the ledger has the exact pico-USD)."
    return Counter(name, doc, labels, registry=registry)


def _histogram(
    registry: CollectorRegistry, name: str, doc: str, buckets: tuple[float, ...]
) -> Histogram:
    return Histogram(name, doc, TIMING_LABELS, registry=registry, buckets=buckets)


@dataclass(slots=True)
class _Bound:
    """The children of one label tuple, bound once: ``inc`` and ``observe`` on them are all
    a request pays."""

    requests: Counter
    cost: Counter
    revenue: Counter
    tokens: tuple[Counter, ...]  # in TOKEN_KINDS order
    duration: Histogram
    upstream: Histogram
    overhead: Histogram
    ttft: Histogram


class RequestMetrics:
    """One app's registry and its per-request families; ``observe`` is the hook."""

    def __init__(self, *, tenant_labels: bool = False, multiprocess_dir: str | None = None):
        """``multiprocess_dir``: prometheus-client's ``PROMETHEUS_MULTIPROC_DIR`` when this
        process is one of several workers (every worker's counts are read from it)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenant_labels = tenant_labels
        self.multiprocess_dir = multiprocess_dir
        self._families = _Families(self.registry, tenant_labels)
        self._bound: dict[tuple[str, ...], _Bound] = {}
        # per (ledger cache value[, tenant]): its counter, and the saved-USD one of a hit
        self._cache: dict[tuple[str, ...], tuple[Counter, Counter | None]] = {}
        events = self._families.cache.events
        self._events = {name: events.labels(name) for name in (*CACHE_EVENTS, "other")}
        # guardrails: bound children by label tuple; the categories seen per detector
        self._guard: dict[tuple[str, ...], Counter] = {}
        self._guard_requests: dict[tuple[str, ...], Counter] = {}
        self._categories: dict[str, set[str]] = {}

    def observe(self, entry: LedgerEntry, plan: str) -> None:
        """Count one ledger entry (``plan``: the plan it was served under)."""
        if self.tenant_labels:
            key: tuple[str, ...] = (entry.model_served, entry.provider, plan, entry.status,
                                    entry.tenant_id)  # fmt: skip
        else:
            key = (entry.model_served, entry.provider, plan, entry.status)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bind(key)
        bound.requests.inc()
        if entry.cost > 0:  # a counter only goes up
            bound.cost.inc(entry.cost / PICO_PER_USD)
        if entry.revenue > 0:
            bound.revenue.inc(entry.revenue / PICO_PER_USD)
        _count_tokens(bound.tokens, entry)
        latency = entry.latency_ms / 1000
        bound.duration.observe(latency)
        upstream = entry.upstream_ms
        if upstream > 0:
            bound.upstream.observe(upstream / 1000)
            bound.overhead.observe(max(latency - upstream / 1000, 0.0))
        if entry.ttft_ms is not None:
            bound.ttft.observe(entry.ttft_ms / 1000)
        if entry.cache is not None:
            self._count_cache(entry, entry.cache)
        if entry.guardrails:
            self._count_findings(entry)

    def _count_findings(self, entry: LedgerEntry) -> None:
        """One request's findings, and the request by its most severe action."""
        tenant = (entry.tenant_id,) if self.tenant_labels else ()
        worst = len(GUARD_ACTIONS)
        for finding in entry.guardrails:
            if not isinstance(finding, dict):
                continue
            action = str(finding.get("action"))
            rank = GUARD_ACTIONS.index(action) if action in GUARD_ACTIONS else worst
            worst = min(worst, rank)
            detector = str(finding.get("detector"))
            detector = detector if detector in DETECTORS else "other"
            labels = (detector, self._category(detector, finding.get("category")),
                      action if rank < len(GUARD_ACTIONS) else "other", *tenant)  # fmt: skip
            counter = self._guard.get(labels)
            if counter is None:
                counter = self._guard[labels] = self._families.guard.findings.labels(*labels)
            counter.inc()
        key = (GUARD_ACTIONS[worst] if worst < len(GUARD_ACTIONS) else "other", *tenant)
        requests = self._guard_requests.get(key)
        if requests is None:
            requests = self._guard_requests[key] = self._families.guard.requests.labels(*key)
        requests.inc()

    def _category(self, detector: str, category: object) -> str:
        """The category as a label value: a plain name, at most ``MAX_CATEGORIES`` per
        detector (the first seen), else ``other``."""
        text = str(category)
        seen = self._categories.setdefault(detector, set())
        if text in seen:
            return text
        plain = text.replace("_", "").replace("-", "").replace(".", "").isalnum()
        if not plain or len(text) > MAX_CATEGORY_CHARS or len(seen) >= MAX_CATEGORIES:
            return "other"
        seen.add(text)
        return text

    def _count_cache(self, entry: LedgerEntry, cache: str) -> None:
        key = (cache, entry.tenant_id) if self.tenant_labels else (cache,)
        bound = self._cache.get(key)
        if bound is None:
            bound = self._cache[key] = self._bind_cache(key)
        counter, saved = bound
        counter.inc()
        if saved is not None and entry.saved > 0:
            saved.inc(entry.saved / PICO_PER_USD)

    def _bind_cache(self, key: tuple[str, ...]) -> tuple[Counter, Counter | None]:
        f, tenant = self._families.cache, key[1:]
        kind = CACHE_HIT_KINDS.get(key[0])
        if kind is not None:
            return f.hits.labels(kind, *tenant), _child(f.saved, tenant)
        if key[0] == MISS:
            return _child(f.misses, tenant), None
        if key[0] == BYPASS:
            return _child(f.bypass, tenant), None
        return self._events["other"], None  # a value the cache stage does not write

    def cache_event(self, event: str) -> None:
        """Count one thing the cache stage did (``CACHE_EVENTS``; any other name: "other")."""
        counter = self._events.get(event)
        (counter if counter is not None else self._events["other"]).inc()

    def _bind(self, key: tuple[str, ...]) -> _Bound:
        f = self._families
        money = key[:3] + key[4:]  # without the status
        timing = key[:2]
        bound = _Bound(
            requests=f.requests.labels(*key),
            cost=f.cost.labels(*money),
            revenue=f.revenue.labels(*money),
            tokens=tuple(f.tokens.labels(kind, *money) for kind in TOKEN_KINDS),
            duration=f.duration.labels(*timing),
            upstream=f.upstream.labels(*timing),
            overhead=f.overhead.labels(*timing),
            ttft=f.ttft.labels(*timing),
        )
        self._bound[key] = bound
        return bound

    def tenants_seen(self, most: int) -> list[str]:
        """Up to ``most`` tenants this process has counted (with tenant labels only)."""
        seen = dict.fromkeys(key[4] for key in self._bound if len(key) > 4)
        return list(seen)[:most]

    def close(self) -> None:
        """In multiprocess mode, this worker is done: prometheus-client forgets its live
        gauges (its counters stay counted)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]

    def scrape_registry(self, *collectors: Collector) -> CollectorRegistry:
        """The registry a scrape reads: this one (one process), or every worker's files
        (multiprocess mode), with ``collectors`` (gauges read at scrape time) beside."""
        if self.multiprocess_dir is None:
            registry = self.registry
        else:
            registry = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        for collector in collectors:
            registry.register(collector)
        return registry


def _child(counter: Counter, labels: tuple[str, ...]) -> Counter:
    """The counter's child for ``labels`` (the tenant), or the counter itself, unlabelled."""
    return counter.labels(*labels) if labels else counter


def _count_tokens(tokens: tuple[Counter, ...], entry: LedgerEntry) -> None:
    if entry.input_tokens > 0:
        tokens[0].inc(entry.input_tokens)
    if entry.cached_input_tokens > 0:
        tokens[1].inc(entry.cached_input_tokens)
    if (written := entry.cache_write_5m_tokens + entry.cache_write_1h_tokens) > 0:
        tokens[2].inc(written)
    if entry.output_tokens > 0:
        tokens[3].inc(entry.output_tokens)
    if entry.reasoning_tokens > 0:
        tokens[4].inc(entry.reasoning_tokens)


def fan_out(*observers: Observer | None) -> Observer | None:
    """One hook calling every observer given (None ones left out); the observer itself when
    there is one, so a gateway with only one on pays nothing for the others."""
    chosen = [o for o in observers if o is not None]
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]
    if len(chosen) == 2:
        first, second = chosen

        def both(entry: LedgerEntry, plan: str) -> None:
            first(entry, plan)
            second(entry, plan)

        return both
    every = tuple(chosen)

    def each(entry: LedgerEntry, plan: str) -> None:
        for observer in every:
            observer(entry, plan)

    return each
