"""Wiring: ``create_app(settings)`` picks the concrete stores and providers.

This is the only module that names a concrete adapter. It builds the services of one app
instance (``wire``) and hands them to ``farebox.api.application``, which builds the ASGI app and
its lifespan around them.
"""

from __future__ import annotations

import gc
import importlib
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from farebox.anomaly.multiplication import MultiplicationWatch
from farebox.anomaly.paging import Pager
from farebox.anomaly.watch import AnomalyWatch
from farebox.api.application import Announce, Wiring, build_app
from farebox.api.client_ip import TrustedProxies
from farebox.api.context import Services
from farebox.api.responses_stored import StoredResponses
from farebox.billing.credits import CreditBook
from farebox.billing.exporter import Exporter, build_runners
from farebox.billing.provider_watch import ProviderWatch
from farebox.billing.upsell import UpsellRecorder
from farebox.catalog import load_catalog
from farebox.config.anomaly import policy
from farebox.config.reload import PlanReloader
from farebox.config.secret_file import load_or_create_secret, secret_path
from farebox.config.settings import ProviderConfig, Settings
from farebox.core.anomaly import Policy
from farebox.core.meters import PlanTerms
from farebox.core.plans import Plan
from farebox.core.pricing import Catalog
from farebox.core.routing import Router
from farebox.errors import ConfigError, VaultError
from farebox.gateway.admission import Budgets
from farebox.gateway.auth import Authenticator
from farebox.gateway.breakers import Breakers
from farebox.gateway.cache import ResponseCache
from farebox.gateway.guard_engines import build_stage, equip
from farebox.gateway.guardrails import GuardrailStage
from farebox.gateway.inflight import InFlight
from farebox.gateway.ledger import LedgerWriter
from farebox.gateway.pipeline import Gateway
from farebox.gateway.rate_limits import RateLimits
from farebox.gateway.routing_table import build_plans, build_router, provider_configs
from farebox.guardrails.abuse import BatchWatch
from farebox.guardrails.findings_watch import FindingsWatch
from farebox.http.client import HttpClient
from farebox.identity.claims import TokenVerifier
from farebox.identity.credentials import ProviderKeys
from farebox.identity.tenancy import Tenancy
from farebox.identity.vault import Vault
from farebox.notify.channels import WebhookAlerts
from farebox.observe.access_log import AccessLog
from farebox.observe.metrics import Observer, RequestMetrics, fan_out
from farebox.observe.traces import build_tracing
from farebox.providers.anthropic import AnthropicProvider
from farebox.providers.base import EmbedRequest, ForwardHeaders, Provider
from farebox.providers.mock import MockOptions, MockProvider
from farebox.providers.openai import OpenAIProvider
from farebox.semantic.base import Embedder
from farebox.stores import vectors
from farebox.stores.base import CacheStore, Store
from farebox.stores.bursts import burst_store
from farebox.stores.findings import findings_of
from farebox.stores.memory.cache import MemoryCache
from farebox.stores.memory.store import MemoryStore
from farebox.stores.multiplication import sighting_store
from farebox.stores.sqlite.single import SingleProcessSQLiteStore
from farebox.stores.sqlite.store import SQLiteStore
from farebox.stores.sqlite.wal import MIB, WalLimits

if TYPE_CHECKING:  # tracing is optional (``farebox[otel]``)
    from farebox.observe.traces_provider import Tracing


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_store(settings: Settings) -> Store:
    if settings.database_url.startswith("postgres"):
        try:
            from farebox.stores.scaled import ScaledStore
        except ImportError as exc:
            raise ConfigError(
                f"{settings.source}: database: PostgreSQL and Redis need the extras: "
                f"pip install 'farebox[postgres,redis]' ({exc})"
            ) from None
        from farebox.stores.timeouts import StoreTimeouts

        assert settings.redis_url is not None
        outbox = bool(settings.file.billing.sinks)
        t = settings.file.timeouts
        timeouts = StoreTimeouts(t.postgres_connect_s, t.postgres_command_s, t.redis_connect_s,
                                 t.redis_command_s, t.ledger_probe_s)  # fmt: skip
        return ScaledStore.from_urls(
            settings.database_url,
            settings.redis_url,
            outbox=outbox,
            prefix=settings.file.redis_prefix,
            timeouts=timeouts,
            cluster=settings.redis_cluster,
            settle_behind=True,  # the answer does not wait for the Redis settle
            global_lease_s=settings.file.budgets.global_lease_s,
        )
    if settings.database_path is None:
        return MemoryStore()
    sync = settings.file.ledger.synchronous
    # the billing outbox costs a row per ledger entry: kept only when there is a sink to feed
    outbox = bool(settings.file.billing.sinks)
    ledger = settings.file.ledger
    wal = WalLimits(max_bytes=ledger.wal_max_mb * MIB, wait_ms=ledger.checkpoint_wait_ms)
    # True: this process owns the database. Unset (auto) is decided by `farebox serve` and
    # `farebox demo` (cli/serve.py ``choose_mode``), which hand over True or False; an app built
    # directly with it unset gets the shared store, safe beside any other process
    if settings.file.server.single_process:
        return SingleProcessSQLiteStore(
            settings.database_path, synchronous=sync, outbox=outbox, wal=wal
        )
    return SQLiteStore(settings.database_path, synchronous=sync, outbox=outbox, wal=wal)


def make_secret(settings: Settings) -> bytes:
    if settings.secret:
        return settings.secret
    if settings.database_path is None:
        return secrets.token_hex(32).encode()
    settings.database_path.parent.mkdir(parents=True, exist_ok=True)
    return load_or_create_secret(secret_path(settings.database_path))


def make_provider(
    name: str, cfg: ProviderConfig, settings: Settings, http: HttpClient, reasoning: frozenset[str]
) -> Provider:
    key = settings.provider_keys.get(name)
    forward = ForwardHeaders(
        cfg.forward_tenant_header, cfg.forward_user_header, cfg.forward_workspace_header
    )
    if cfg.kind == "mock":
        o = cfg.output_tokens
        options = MockOptions(
            seed=cfg.seed,
            latency_ms=cfg.latency_ms,
            ttft_ms=cfg.ttft_ms,
            tokens_per_second=cfg.tokens_per_second,
            distribution=o.distribution,
            mean_tokens=o.mean,
            min_tokens=o.min,
            max_tokens=o.max,
            error_rate=cfg.error_rate,
            error_status=cfg.error_status,
            error_statuses=tuple(cfg.error_statuses),
            spike_rate=cfg.spike_rate,
            spike_ms=cfg.spike_ms,
            rate_limit_rate=cfg.rate_limit_rate,
            retry_after_s=cfg.retry_after_s,
            disconnect_rate=cfg.disconnect_rate,
            disconnect_after=cfg.disconnect_after,
        )
        return MockProvider(name, options, reasoning, forward, key)
    if cfg.kind == "anthropic":
        url = cfg.base_url or "https://api.anthropic.com"
        return AnthropicProvider(name, url, key, http, forward=forward)
    url = cfg.base_url or "https://api.openai.com/v1"
    return OpenAIProvider(name, url, key, http, dict(cfg.headers), cfg.responses, forward)


def anomaly_policies(settings: Settings) -> tuple[dict[str, Policy], Policy]:
    """Each plan's detection policy, and the gateway-wide one for plans that set none."""
    cfg = settings.file.anomaly
    plans = {
        name: policy(cfg, plan.anomaly, f"plans.{name}.anomaly")
        for name, plan in settings.file.plans.items()
    }
    return plans, policy(cfg, None, "anomaly")


def make_watch(
    settings: Settings,
    store: Store,
    http: HttpClient,
    webhook: WebhookAlerts | None,
    clock: Callable[[], float],
) -> AnomalyWatch:
    cfg = settings.file.anomaly
    pager = Pager(cfg, settings.paging_secrets, http, webhook, cfg.retry_backoff_s)
    plans, default = anomaly_policies(settings)
    return AnomalyWatch(store, plans, default, pager, clock=clock,
                        flush_interval_s=cfg.flush_interval_s,
                        check_interval_s=cfg.check_interval_s)  # fmt: skip


def make_multiplication(
    settings: Settings, store: Store, pager: Pager, clock: Callable[[], float]
) -> MultiplicationWatch | None:
    """Account multiplication (issue 15), when on and the store keeps sightings."""
    cfg = settings.file.anomaly
    sightings = sighting_store(store)
    if sightings is None or not (cfg.enabled and cfg.account_multiplication.enabled):
        return None
    if not set(cfg.account_multiplication.plans) & set(settings.file.plans):
        return None  # no plan it watches is configured (a reload adding one: restart)
    return MultiplicationWatch(store, sightings, cfg.account_multiplication, pager, clock=clock,
                               flush_interval_s=cfg.flush_interval_s,
                               check_interval_s=cfg.check_interval_s)  # fmt: skip


def build_providers(
    settings: Settings,
    catalog: Catalog,
    router: Router,
    http: HttpClient,
    given: Mapping[str, Provider],
) -> dict[str, Provider]:
    """The providers given, and one made for each configured name not given; every name the
    routing table uses must be among them."""
    reasoning = frozenset(m for m, k in catalog.kinds.items() if k == "reasoning")
    built: dict[str, Provider] = dict(given)
    for name, cfg in provider_configs(settings).items():
        built.setdefault(name, make_provider(name, cfg, settings, http, reasoning))
    missing = {t.provider for n in router.names() for t in router.resolve(n) or ()} - set(built)
    if missing:
        raise ConfigError(f"{settings.source}: no provider named {sorted(missing)}")
    return built


def make_alerts(settings: Settings, http: HttpClient) -> WebhookAlerts | None:
    """The signed budget and anomaly webhook, when ``budgets.alert_webhook_url`` is set."""
    url = settings.file.budgets.alert_webhook_url
    return WebhookAlerts(url, settings.alert_secret, http) if url else None


def make_budgets(
    settings: Settings, store: Store, alerts: WebhookAlerts | None, clock: Callable[[], float]
) -> Budgets:
    return Budgets(
        store,
        settings.file.budgets,
        {name: plan.budgets for name, plan in settings.file.plans.items()},
        clock=clock,
        upgrade_url=settings.file.upgrade_url or settings.file.server.upgrade_url,
        on_alert=alerts.send if alerts else None,
        credits=CreditBook(store.credits, store, store.auth_epoch, clock),
    )


def make_authenticator(
    settings: Settings, store: Store, secret: bytes, http: HttpClient,
    clock: Callable[[], float], plans: frozenset[str],
) -> Authenticator:  # fmt: skip
    """Keys, and the JWTs and subdomains of ``auth:`` when configured."""
    cfg = settings.file.auth
    auto = cfg.jwt.auto_create_tenants if cfg.jwt else None
    if auto is not None and auto.plan not in plans:
        known = ", ".join(sorted(plans))
        raise ConfigError(f"{settings.source}: auth.jwt.auto_create_tenants.plan: unknown plan "
                          f"{auto.plan!r}; configured plans: {known}")  # fmt: skip
    return Authenticator(
        store, secret, clock, settings.file.server.key_cache_size,
        appeal=settings.file.anomaly.appeal,
        jwt=make_jwt_verifier(settings, http, clock) if cfg.jwt else None,
        base_domain=cfg.subdomain.base_domain if cfg.subdomain else None,
        auto_create_plan=auto.plan if auto else None,
        workspaces=store.workspaces,
    )  # fmt: skip


def make_jwt_verifier(
    settings: Settings, http: HttpClient, clock: Callable[[], float]
) -> TokenVerifier:
    """``auth.jwt``'s verifier; PyJWT is imported only here, when it is configured."""
    assert settings.file.auth.jwt is not None
    try:
        from farebox.identity.jwt import build_verifier
    except ImportError as exc:
        raise ConfigError(
            f"{settings.source}: auth.jwt needs the farebox[identity] extra (PyJWT and "
            f"cryptography): pip install 'farebox[identity]' ({exc})"
        ) from None
    return build_verifier(settings.file.auth.jwt, http, clock, source=settings.source,
                          base_dir=Path.cwd())  # fmt: skip


def trusted_proxies(settings: Settings) -> TrustedProxies:
    try:
        return TrustedProxies(settings.file.server.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"{settings.source}: server.{exc}") from None


def make_exporter(
    settings: Settings,
    store: Store,
    http: HttpClient,
    alerts: WebhookAlerts | None,
    clock: Callable[[], float],
    plans: Callable[[str], Plan] | None = None,
) -> Exporter:
    """The billing exporter; ``plans``: a plan by name, live (the plan meters' terms)."""
    billing = settings.file.billing
    terms = (lambda name: PlanTerms.of(plans(name))) if plans is not None else None
    return Exporter(store, build_runners(settings), http, batch=billing.batch,
                    hour_grace_s=billing.hour_grace_s, clock=clock,
                    on_alert=alerts.send if alerts else None, plan_terms=terms)  # fmt: skip


def make_metrics(settings: Settings) -> RequestMetrics | None:
    cfg = settings.file.metrics
    if not cfg.enabled:
        return None
    return RequestMetrics(tenant_labels=cfg.tenant_labels, multiprocess_dir=settings.metrics_dir)


def make_access_log(settings: Settings) -> AccessLog | None:
    cfg = settings.file.logging
    return AccessLog(cfg.format) if cfg.access_log else None


def observers(
    metrics: RequestMetrics | None, access_log: AccessLog | None, watch: AnomalyWatch,
    findings: FindingsWatch | None = None,
) -> Observer | None:  # fmt: skip
    """What sees every ledger entry: the metrics, the access log, the anomaly watch (each
    only when on), and the guardrail findings' events and pauses (issue 15)."""
    return fan_out(
        metrics.observe if metrics is not None else None,
        access_log.observe if access_log is not None else None,
        watch.observe if watch.enabled else None,
        findings.observe if findings is not None else None,
    )


def plan_reloader(
    settings: Settings,
    gateway: Gateway,
    tenancy: Tenancy,
    budgets: Budgets,
    limits: RateLimits,
    watch: AnomalyWatch,
    tracing: Tracing | None = None,
) -> PlanReloader:
    """Re-reads the config file while serving and hands every consumer the new plans."""

    def apply_plans(new: Settings) -> None:
        fresh = build_plans(new)
        gateway.reload_plans(fresh, new.file.default_plan or "default")
        tenancy.reload_plans(fresh)
        budgets.reload({name: plan.budgets for name, plan in new.file.plans.items()})
        limits.reload({name: plan.rate_limits for name, plan in new.file.plans.items()})
        watch.reload(*anomaly_policies(new))
        if tracing is not None:
            tracing.reload(content_plans(new))

    def prepare(new: Settings) -> None:  # blocking: the reloader runs it in a thread
        plans = {name: plan.guardrails for name, plan in new.file.plans.items()}
        equip(gateway.guardrails, plans, str(new.source), new.file.guard_model)

    interval = settings.file.server.reload_interval_s
    return PlanReloader(settings, apply_plans, interval, prepare)


def make_cache(
    settings: Settings,
    store: Store,
    secret: bytes,
    providers: Mapping[str, Provider],
    router: Router,
    clock: Callable[[], float],
    on_event: Callable[[str], None] | None = None,
    keys: ProviderKeys | None = None,
) -> ResponseCache | None:
    """The response cache: in-process, or in Redis when ``redis:`` is configured (``cache.
    backend`` auto or redis), opened once the store is (with its key prefix); the semantic
    cache's embedder when a plan asks for it. None when no plan caches (a plan that starts
    caching on a reload of the config file needs a restart)."""
    modes = {plan.cache.mode for plan in settings.file.plans.values()}
    if modes <= {"off"}:
        return None
    cfg = settings.file.cache
    if cfg.backend == "redis" and not settings.redis_url:
        raise ConfigError(f"{settings.source}: cache.backend is redis, but no redis: is set")
    opener = None
    backend: CacheStore
    if cfg.backend != "memory" and settings.redis_url:
        try:  # lazily: the redis extra
            redis_cache = importlib.import_module("farebox.stores.redis.cache")
        except ImportError as exc:
            raise ConfigError(
                f"{settings.source}: cache in Redis needs the extra: pip install "
                f"'farebox[redis]' ({exc})"
            ) from None
        redis = redis_cache.RedisCache.from_url(settings.redis_url, secret=secret,
                                                cluster=settings.redis_cluster,
                                                clock=clock)  # fmt: skip
        backend = redis

        async def opener() -> None:  # the store's prefix is known once it is open
            prefix = getattr(store, "key_prefix", None)
            await redis.open(prefix if isinstance(prefix, str) else
                             settings.file.redis_prefix or "farebox")  # fmt: skip
    else:
        backend = MemoryCache(clock=clock)
    embedder = make_embedder(settings, providers, router, keys) if "semantic" in modes else None
    return ResponseCache(backend, cfg, embedder=embedder, opener=opener, clock=clock,
                         on_event=on_event)  # fmt: skip


def make_embedder(
    settings: Settings, providers: Mapping[str, Provider], router: Router,
    keys: ProviderKeys | None = None,
) -> Embedder:  # fmt: skip
    """``cache.semantic.embedder``: ``local`` (the ``farebox[semantic]`` extra, loaded at
    start-up: ``EmbedderUnavailable`` names what is missing) or an embeddings model alias of
    this gateway, called on its first deployment (not metered: the cache's own cost)."""
    cfg = settings.file.cache.semantic
    embedder: Embedder
    if cfg.embedder == "local":  # imported lazily: the module imports the extra at start-up
        local = importlib.import_module("farebox.semantic.local")
        embedder = local.LocalEmbedder(queue=cfg.queue, threads=cfg.threads)
        return embedder
    targets = [t for t in router.resolve(cfg.embedder) or () if t.kind == "embedding"]
    if not targets:
        raise ConfigError(
            f"{settings.source}: cache.semantic.embedder: {cfg.embedder!r} is neither 'local' "
            "nor an embeddings model of this gateway"
        )
    vectors.numpy()  # the search needs numpy whatever embeds: a start-up error naming the extra
    hosted = importlib.import_module("farebox.semantic.hosted")
    name, model = targets[0].provider, targets[0].model
    provider = providers[name]

    async def embed_texts(texts: list[str]) -> list[list[float]]:
        api_key = await keys.platform_key(name) if keys is not None else None  # the vault's
        request = EmbedRequest({"model": model, "input": texts}, 30.0, api_key=api_key)
        result = await provider.embed(request)
        data = sorted(result.body.get("data") or [], key=lambda d: d.get("index", 0))
        return [d["embedding"] for d in data]

    embedder = hosted.HostedEmbedder(embed_texts, name=cfg.embedder, queue=cfg.queue,
                                     concurrency=cfg.threads)  # fmt: skip
    return embedder


def content_plans(settings: Settings) -> frozenset[str]:
    """The plans whose traces may record prompt and completion text."""
    plans = settings.file.plans.items()
    return frozenset(name for name, plan in plans if plan.observe.record_content)


def wire(
    settings: Settings,
    store: Store | None,
    providers: Mapping[str, Provider],
    clock: Callable[[], float],
    span_exporter: Any = None,
) -> Wiring:
    """Every service of one app instance, built in order; nothing is opened yet."""
    tracing = build_tracing(settings.file.tracing, content_plans=content_plans(settings),
                            exporter=span_exporter, source=str(settings.source))  # fmt: skip
    catalog = load_catalog()
    router = build_router(settings, catalog)
    plans = build_plans(settings)
    given, store = store, store or make_store(settings)
    secret = make_secret(settings)
    http = HttpClient()
    built = build_providers(settings, catalog, router, http, providers)
    in_flight = InFlight()  # counted by the data plane; a request alone commits its own entry
    ledger = LedgerWriter(store, batch_max=settings.file.ledger.batch_max, in_flight=in_flight)
    alerts = make_alerts(settings, http)
    budgets = make_budgets(settings, store, alerts, clock)
    proxies = trusted_proxies(settings)
    breakers = Breakers(store, settings.file.routing.breaker, clock=clock)
    watch = make_watch(settings, store, http, alerts, clock)
    limits = RateLimits({name: plan.rate_limits for name, plan in settings.file.plans.items()})
    metrics, access_log = make_metrics(settings), make_access_log(settings)
    # the metrics count the cache's errors, skipped lookups, vetoes and stored entries
    events = getattr(metrics, "cache_event", None)
    keys = provider_keys(settings, store, secret)
    cache = make_cache(settings, store, secret, built, router, clock, events, keys)
    upsell = UpsellRecorder(store.upsell, clock)
    guard = FindingsWatch(store, findings_of(store), alerts, clock=clock)  # issue 15
    gateway = Gateway(router=router, plans=plans, providers=built, ledger=ledger,
                      budgets=budgets, limits=limits, breakers=breakers,
                      routing=settings.file.routing,
                      default_plan=settings.file.default_plan or "default", clock=clock,
                      observe=observers(metrics, access_log, watch, guard),
                      tracing=tracing, cache=cache, refused=upsell.refused,
                      keys=keys, guardrails=guardrail_stage(settings, store))  # fmt: skip
    guard.plans = gateway.plan_named  # each plan's max_findings_per_hour, reloads included
    auth = make_authenticator(settings, store, secret, http, clock, frozenset(plans))
    # a store of this app's own that no other process uses (one handed in may be shared by
    # other app instances): continuations of its answers reach this app only
    sole = given is None and isinstance(store, SingleProcessSQLiteStore | MemoryStore)
    responses = StoredResponses(store.responses, settings.file.responses, clock, sole_user=sole)
    services = Services(settings, store, auth, gateway, ledger, secret, "", clock(),
                        budgets, proxies, breakers, responses, tracing=tracing,
                        cache=cache.store if cache is not None else None, http=http,
                        on_alert=alerts.send if alerts else None, clock=clock,
                        sightings=make_multiplication(settings, store, watch.pager,
                                                      clock))  # fmt: skip
    tenancy = Tenancy(store, secret, plans, clock, upsell=store.upsell)
    reloader = plan_reloader(settings, gateway, tenancy, budgets, limits, watch, tracing)
    exporter = make_exporter(settings, store, http, alerts, clock, gateway.plan_named)
    bills = ProviderWatch(store, settings, gateway.deployments, http,
                          alerts.send if alerts else None, clock)  # fmt: skip
    return Wiring(services, tenancy, reloader, watch, exporter, alerts, built, http, in_flight,
                  metrics, access_log, tracing, cache,
                  bills if settings.file.reconcile.interval_s else None, upsell,
                  findings=guard)  # fmt: skip


def guardrail_stage(settings: Settings, store: object = None) -> GuardrailStage:
    """Issue 15: the guardrail stage, with presidio and the injection classifier loaded when
    a plan needs them (a missing extra stops start-up, naming it); batch abuse counted in the
    store's shared burst counts when it has them (scaled out), else per process."""
    plans = {name: plan.guardrails for name, plan in settings.file.plans.items()}
    batch = BatchWatch(shared=burst_store(store))
    return build_stage(plans, str(settings.source), settings.file.guard_model, batch)


def provider_keys(settings: Settings, store: Store, secret: bytes) -> ProviderKeys:
    """Issue 14: each attempt's provider key from the vault (``integration:NAME``, or the
    tenant's own), cached by the store's auth epoch. The vault is lazy: a base install
    (no ``farebox[identity]`` extra) starts unless a provider names ``integration:...``."""
    vault = Vault.of(settings.kek, secret)
    if settings.provider_integrations:
        try:
            vault.ready()
        except VaultError as exc:
            names = ", ".join(
                f"providers.{p}.api_key" for p in sorted(settings.provider_integrations)
            )
            raise ConfigError(f"{settings.source}: {names}: {exc.message}") from None
    return ProviderKeys(store.credentials, store.auth_epoch, vault, settings.provider_integrations)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    providers: Mapping[str, Provider] | None = None,
    clock: Callable[[], float] = time.time,
    announce: Announce = _stderr,
    span_exporter: Any = None,
) -> FastAPI:
    """Build the ASGI app. Nothing is opened until the app starts (lifespan).
    ``span_exporter``: an OpenTelemetry ``SpanExporter`` the spans go to instead of OTLP
    (tests hand an in-memory one); it turns tracing on."""
    return build_app(wire(settings, store, providers or {}, clock, span_exporter), announce)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` worker processes."""
    from farebox.config.settings import settings_from_env

    app = create_app(settings_from_env())
    tune_gc()
    return app


GC_GEN0 = 20_000  # allocations between collections of the youngest generation (default 700)


def tune_gc() -> None:
    """A served process keeps what it built at start-up (modules, the app, its settings) for
    its whole life: those objects are frozen out of the cyclic collector's scans, and the
    youngest generation is collected every 20,000 allocations instead of 700, so a request
    rarely pays for a collection (about 7% of a request's CPU went to them). Only for a
    process that serves: tests that build many apps in one process keep the defaults."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0, *gc.get_threshold()[1:])
