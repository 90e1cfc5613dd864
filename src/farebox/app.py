"""Wiring: ``create_app(settings)`` picks the concrete stores and providers."""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from farebox import __version__
from farebox.anomaly.paging import Pager
from farebox.anomaly.watch import AnomalyWatch
from farebox.api import anthropic, me, openai
from farebox.api.admin import router as admin
from farebox.api.admin.errors import method_not_allowed, validation_failure
from farebox.api.client_ip import TrustedProxies
from farebox.api.context import Services
from farebox.api.docs import add_docs
from farebox.api.errors import error_response
from farebox.api.fastpath import FareboxApp
from farebox.api.gate import Gate, admin_key_check
from farebox.api.limits_input import InputLimits
from farebox.api.openapi_data import install_data_plane_docs
from farebox.api.openapi_doc import farebox_openapi
from farebox.billing.exporter import Exporter, build_runners
from farebox.catalog import load_catalog
from farebox.config.anomaly import policy
from farebox.config.reload import PlanReloader
from farebox.config.secret_file import load_or_create_secret, secret_path
from farebox.config.settings import ProviderConfig, Settings
from farebox.core.anomaly import Policy
from farebox.core.keys import ADMIN_PREFIX, hash_key, new_key
from farebox.errors import (
    ConfigError,
    FareboxError,
    InvalidRequest,
    NotFound,
)
from farebox.gateway.admission import Budgets
from farebox.gateway.auth import Authenticator
from farebox.gateway.breakers import Breakers
from farebox.gateway.inflight import InFlight
from farebox.gateway.ledger import LedgerWriter
from farebox.gateway.pipeline import Gateway
from farebox.gateway.rate_limits import RateLimits
from farebox.gateway.routing_table import build_plans, build_router, provider_configs
from farebox.http.client import HttpClient
from farebox.identity.tenancy import Tenancy
from farebox.notify.channels import WebhookAlerts
from farebox.providers.anthropic import AnthropicProvider
from farebox.providers.base import Provider
from farebox.providers.mock import MockOptions, MockProvider
from farebox.providers.openai import OpenAIProvider
from farebox.stores.base import Store
from farebox.stores.memory.store import MemoryStore
from farebox.stores.sqlite.single import SingleProcessSQLiteStore
from farebox.stores.sqlite.store import SQLiteStore
from farebox.stores.sqlite.wal import MIB, WalLimits

Announce = Callable[[str], None]


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
        )
    if settings.database_path is None:
        return MemoryStore()
    sync = settings.file.ledger.synchronous
    # the billing outbox costs a row per ledger entry: kept only when there is a sink to feed
    outbox = bool(settings.file.billing.sinks)
    ledger = settings.file.ledger
    wal = WalLimits(max_bytes=ledger.wal_max_mb * MIB, wait_ms=ledger.checkpoint_wait_ms)
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
        return MockProvider(name, options, reasoning)
    if cfg.kind == "anthropic":
        return AnthropicProvider(name, cfg.base_url or "https://api.anthropic.com", key, http)
    return OpenAIProvider(
        name, cfg.base_url or "https://api.openai.com/v1", key, http, dict(cfg.headers)
    )


async def resolve_admin_hash(
    settings: Settings, store: Store, secret: bytes, announce: Announce
) -> str:
    """The admin key's hash: from FAREBOX_ADMIN_KEY, or generated once and printed once."""
    if settings.admin_key:
        return hash_key(secret, settings.admin_key)
    stored = await store.get_meta("admin_key_hash")
    if stored:
        return stored
    raw = new_key(ADMIN_PREFIX, secrets.token_urlsafe)
    stored = await store.put_meta_if_absent("admin_key_hash", hash_key(secret, raw))
    if stored == hash_key(secret, raw):
        announce(
            f"Generated admin key (shown once, keep it): {raw}\n"
            "Set FAREBOX_ADMIN_KEY to choose your own."
        )
    return stored


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


def _error_handlers(app: FastAPI) -> None:
    async def farebox_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FareboxError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_failure(exc.errors()))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(NotFound(f"No route for {request.method} {request.url.path}."))
        if exc.status_code == 405:
            return error_response(method_not_allowed(request.app, request.scope))
        error = InvalidRequest(str(exc.detail), code=f"http_{exc.status_code}")
        response = error_response(error)
        response.status_code = exc.status_code
        return response

    app.add_exception_handler(FareboxError, farebox_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    providers: Mapping[str, Provider] | None = None,
    clock: Callable[[], float] = time.time,
    announce: Announce = _stderr,
) -> FastAPI:
    """Build the ASGI app. Nothing is opened until the app starts (lifespan)."""
    catalog = load_catalog()
    router = build_router(settings, catalog)
    plans = build_plans(settings)
    default_plan = settings.file.default_plan or "default"
    store = store or make_store(settings)
    secret = make_secret(settings)
    http = HttpClient()
    reasoning = frozenset(m for m, k in catalog.kinds.items() if k == "reasoning")
    built: dict[str, Provider] = dict(providers or {})
    for name, cfg in provider_configs(settings).items():
        built.setdefault(name, make_provider(name, cfg, settings, http, reasoning))
    missing = {t.provider for n in router.names() for t in router.resolve(n) or ()} - set(built)
    if missing:
        raise ConfigError(f"{settings.source}: no provider named {sorted(missing)}")
    in_flight = InFlight()  # counted by the data plane; a request alone commits its own entry
    ledger = LedgerWriter(store, batch_max=settings.file.ledger.batch_max, in_flight=in_flight)
    budget_cfg = settings.file.budgets
    alerts = (
        WebhookAlerts(budget_cfg.alert_webhook_url, settings.alert_secret, http)
        if budget_cfg.alert_webhook_url
        else None
    )
    budgets = Budgets(
        store,
        budget_cfg,
        {name: plan.budgets for name, plan in settings.file.plans.items()},
        clock=clock,
        upgrade_url=settings.file.upgrade_url or settings.file.server.upgrade_url,
        on_alert=alerts.send if alerts else None,
    )
    try:
        proxies = TrustedProxies(settings.file.server.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"{settings.source}: server.{exc}") from None
    breakers = Breakers(store, settings.file.routing.breaker, clock=clock)
    watch = make_watch(settings, store, http, alerts, clock)
    limits = RateLimits({name: plan.rate_limits for name, plan in settings.file.plans.items()})
    gateway = Gateway(
        router=router,
        plans=plans,
        providers=built,
        ledger=ledger,
        budgets=budgets,
        limits=limits,
        breakers=breakers,
        routing=settings.file.routing,
        default_plan=default_plan,
        clock=clock,
        observe=watch.observe if watch.enabled else None,
    )
    auth = Authenticator(store, secret, clock, settings.file.server.key_cache_size,
                         appeal=settings.file.anomaly.appeal)  # fmt: skip
    services = Services(
        settings,
        store,
        auth,
        gateway,
        ledger,
        secret,
        "",
        clock(),
        budgets,
        proxies,
        breakers,
    )
    tenancy = Tenancy(store, secret, plans, clock)

    def apply_plans(new: Settings) -> None:
        fresh = build_plans(new)
        gateway.reload_plans(fresh, new.file.default_plan or "default")
        tenancy.reload_plans(fresh)
        budgets.reload({name: plan.budgets for name, plan in new.file.plans.items()})
        limits.reload({name: plan.rate_limits for name, plan in new.file.plans.items()})
        watch.reload(*anomaly_policies(new))

    reloader = PlanReloader(settings, apply_plans, settings.file.server.reload_interval_s)
    billing = settings.file.billing
    exporter = Exporter(store, build_runners(settings), http, batch=billing.batch,
                        hour_grace_s=billing.hour_grace_s, clock=clock,
                        on_alert=alerts.send if alerts else None)  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await store.open()
        except ConfigError as exc:  # e.g. another deployment owns this redis_prefix
            announce(f"Refusing to start: {exc.message}")
            raise
        services.admin_key_hash = await resolve_admin_hash(settings, store, secret, announce)
        ledger.start()
        budgets.start()
        breakers.start()
        reloader.start()
        watch.start()
        if billing.in_serve and exporter.sinks:
            await exporter.start(billing.interval_s)
        try:
            yield
        finally:
            await reloader.stop()
            await watch.stop()
            await watch.pager.aclose(settings.file.anomaly.drain_s)
            await exporter.stop()
            await breakers.stop()
            await budgets.stop()
            await ledger.stop()
            if alerts is not None:
                await alerts.aclose(settings.file.anomaly.drain_s)
            for provider in built.values():
                await provider.aclose()
            await http.aclose()
            await store.close()

    server = settings.file.server
    bounds = InputLimits(server.max_body_bytes, server.max_header_count,
                         server.max_header_bytes, server.max_json_depth)  # fmt: skip
    key_check = admin_key_check(lambda: services.secret, lambda: services.admin_key_hash)
    app = FareboxApp(
        title="Farebox",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        in_flight=in_flight,
        limits=bounds,
        gate=Gate(bounds, key_check, frozenset({"/openapi.json", "/docs"})),
    )
    app.openapi = farebox_openapi(app)  # type: ignore[method-assign]
    if server.docs:
        add_docs(app, server.docs_assets_url)
    app.state.services = services
    app.state.tenancy = tenancy
    app.state.reloader = reloader
    app.state.exporter = exporter
    app.state.watch = watch
    app.include_router(admin.router(services, tenancy, exporter, watch))
    _error_handlers(app)
    app.add_fast_routes(
        [*openai.routes(services), *anthropic.routes(services), *me.routes(services)]
    )
    install_data_plane_docs(app)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` worker processes."""
    from farebox.config.settings import settings_from_env

    return create_app(settings_from_env())
