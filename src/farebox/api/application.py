"""The ASGI application of one wired gateway: its routes, error handlers and documentation, and
the lifespan that opens the store and starts the background tasks, then stops them in reverse.

``farebox.app`` picks the concrete adapters and wires the services; this module is handed the
result (a ``Wiring``) and builds the application around it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from farebox import __version__
from farebox.anomaly.watch import AnomalyWatch
from farebox.api import anthropic, completions, counting, dashboard, me, metrics, openai, responses
from farebox.api.admin import router as admin
from farebox.api.admin.access import actor_check, admin_refusal
from farebox.api.admin.audit_trail import AuditedGate, audited
from farebox.api.admin.errors import method_not_allowed, validation_failure
from farebox.api.billing_webhooks import router as billing_webhooks
from farebox.api.context import Services
from farebox.api.docs import add_docs
from farebox.api.errors import error_response
from farebox.api.fastpath import FareboxApp
from farebox.api.gate import Gate
from farebox.api.graphql import endpoint as graphql
from farebox.api.limits_input import InputLimits
from farebox.api.openapi_counting import install_counting_docs
from farebox.api.openapi_data import install_data_plane_docs
from farebox.api.openapi_doc import farebox_openapi
from farebox.billing.exporter import Exporter
from farebox.billing.provider_watch import ProviderWatch
from farebox.billing.upsell import UpsellRecorder
from farebox.config.reload import PlanReloader
from farebox.config.settings import Settings
from farebox.core.keys import ADMIN_PREFIX, hash_key, new_key
from farebox.errors import ConfigError, FareboxError, InvalidRequest, NotFound
from farebox.gateway.cache import ResponseCache
from farebox.gateway.inflight import InFlight
from farebox.guardrails.findings_watch import FindingsWatch
from farebox.http.client import HttpClient
from farebox.identity.tenancy import Tenancy
from farebox.notify.channels import WebhookAlerts
from farebox.observe.access_log import AccessLog
from farebox.observe.metrics import RequestMetrics
from farebox.providers.base import Provider
from farebox.stores.base import Store

if TYPE_CHECKING:  # tracing is optional (``farebox[otel]``)
    from farebox.observe.traces_provider import Tracing

Announce = Callable[[str], None]


@dataclass(frozen=True)
class Wiring:
    """The wired services of one app instance: what the routes serve and the lifespan runs."""

    services: Services
    tenancy: Tenancy
    reloader: PlanReloader
    watch: AnomalyWatch
    exporter: Exporter
    alerts: WebhookAlerts | None
    providers: Mapping[str, Provider]
    http: HttpClient
    in_flight: InFlight
    metrics: RequestMetrics | None = None  # GET /metrics, when metrics.enabled
    access_log: AccessLog | None = None  # when logging.access_log
    tracing: Tracing | None = None  # None: tracing is off
    cache: ResponseCache | None = None  # the response cache: opened after the store
    provider_watch: ProviderWatch | None = None  # reconcile.interval_s: providers' bills
    upsell: UpsellRecorder | None = None  # upsell moments, written off the request path
    findings: FindingsWatch | None = None  # guardrail events and max_findings_per_hour pauses


def build_app(wiring: Wiring, announce: Announce) -> FastAPI:
    """The ASGI app: the admin API and docs on FastAPI, the data plane on its fast path."""
    services = wiring.services
    server = services.settings.file.server
    bounds = InputLimits(server.max_body_bytes, server.max_header_count,
                         server.max_header_bytes, server.max_json_depth)  # fmt: skip
    key_check = actor_check(services)  # any admin key; its role is judged per operation
    app = FareboxApp(
        title="Farebox",
        version=__version__,
        lifespan=lifespan(wiring, announce),
        docs_url=None,
        redoc_url=None,
        in_flight=wiring.in_flight,
        limits=bounds,
        gate=Gate(bounds, key_check, frozenset({"/openapi.json", "/docs"})),
        tracing=wiring.tracing,
    )
    app.openapi = farebox_openapi(app)  # type: ignore[method-assign]
    if server.docs:
        add_docs(app, server.docs_assets_url)
    _add_routes(app, wiring)
    return app


def _add_routes(app: FareboxApp, wiring: Wiring) -> None:
    services = wiring.services
    app.state.services = services
    app.state.tenancy = wiring.tenancy
    app.state.reloader = wiring.reloader
    app.state.exporter = wiring.exporter
    app.state.watch = wiring.watch
    app.state.upsell = wiring.upsell
    app.state.findings = wiring.findings  # issue 15: guardrail events and pauses
    ops = admin.admin_routes(services, wiring.tenancy, wiring.exporter, wiring.watch)
    app.include_router(admin.router(services, wiring.tenancy, wiring.exporter, wiring.watch, ops))
    app.gate = audited(app.gate, services, wiring.tenancy, ops)  # issue 14: the audit trail
    app.include_router(billing_webhooks(services))  # credit grants, signed by the billing system
    graphql.mount(app, services, wiring.tenancy, wiring.watch)
    if services.settings.file.dashboard.enabled:
        app.include_router(
            dashboard.router(services, wiring.tenancy, wiring.exporter, wiring.watch)
        )
    error_handlers(app)
    app.add_fast_routes(
        [
            *openai.routes(services),
            *anthropic.routes(services),
            *me.routes(services),
            *responses.routes(services),
        ]
    )
    app.add_fast_routes([*completions.routes(services), *counting.routes(services)])
    app.add_prefix_route(responses.prefix_route(services))
    if wiring.metrics is not None:
        app.add_fast_routes(metrics.routes(services, wiring.metrics, wiring.exporter))
    install_data_plane_docs(app)
    install_counting_docs(app)


def error_handlers(app: FastAPI) -> None:
    """Every failure of the admin framework answered in the one error format."""

    async def farebox_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FareboxError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        refused = await admin_refusal(request)  # the caller's role is judged before its input
        return error_response(refused or validation_failure(exc.errors()))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        refused = await admin_refusal(request)  # e.g. a body that does not parse: role first
        if refused is not None:
            return error_response(refused)
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


def lifespan(
    wiring: Wiring, announce: Announce
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open and start everything when the app starts; stop and close it all when it stops."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # registered first: whatever ``start`` began is stopped, also when it fails halfway
            # (every stop and close below tolerates a part that never started)
            stack.push_async_callback(stop, wiring)
            await start(wiring, announce)
            gate = getattr(app, "gate", None)
            if isinstance(gate, AuditedGate):  # before the store closes: folded refusals
                stack.push_async_callback(gate.flush)
            yield

    return run


async def start(wiring: Wiring, announce: Announce) -> None:
    """Open the store, settle the admin key, start the background tasks."""
    services = wiring.services
    settings, store = services.settings, services.store
    try:
        await store.open()
    except ConfigError as exc:  # e.g. another deployment owns this redis_prefix
        announce(f"Refusing to start: {exc.message}")
        raise
    if wiring.cache is not None:
        try:  # its backend (the store's Redis prefix is known now) and its embedder
            await wiring.cache.start()
        except ConfigError as exc:  # e.g. the semantic cache's extra is not installed
            announce(f"Refusing to start: {exc.message}")
            raise
    services.admin_key_hash = await resolve_admin_hash(settings, store, services.secret, announce)
    if wiring.access_log is not None:
        wiring.access_log.start()
    if wiring.tracing is not None:
        wiring.tracing.start()
    services.ledger.start()
    services.budgets.start()
    services.breakers.start()
    wiring.reloader.start()
    wiring.watch.start()
    if services.sightings is not None:  # account multiplication (issue 15)
        services.sightings.start()
    if wiring.findings is not None:
        wiring.findings.start()
    services.responses.start()
    billing = settings.file.billing
    if billing.in_serve and wiring.exporter.sinks:
        await wiring.exporter.start(billing.interval_s)
    if wiring.provider_watch is not None and settings.file.reconcile.interval_s:
        wiring.provider_watch.start(settings.file.reconcile.interval_s)


async def stop(wiring: Wiring) -> None:
    """Stop the background tasks, let alerts in flight drain, close every connection."""
    services = wiring.services
    drain_s = services.settings.file.anomaly.drain_s
    await wiring.reloader.stop()
    await wiring.watch.stop()
    if services.sightings is not None:
        await services.sightings.stop()
    await wiring.watch.pager.aclose(drain_s)
    if wiring.findings is not None:  # its last tallies, before the alerts drain
        await wiring.findings.stop()
    await services.responses.stop()
    await wiring.exporter.stop()
    if wiring.provider_watch is not None:
        await wiring.provider_watch.stop()
    await services.breakers.stop()
    await services.budgets.stop()
    await services.ledger.stop()
    if wiring.access_log is not None:
        wiring.access_log.stop()  # every line of the requests served is written
    if wiring.metrics is not None:
        wiring.metrics.close()
    if wiring.alerts is not None:
        await wiring.alerts.aclose(drain_s)
    for provider in wiring.providers.values():
        await provider.aclose()
    await wiring.http.aclose()
    if wiring.tracing is not None:  # the last spans are exported before it stops
        await wiring.tracing.stop()
    if wiring.cache is not None:  # entries being stored are written first
        await wiring.cache.close()
    if wiring.upsell is not None:  # the moments queued are written first
        await wiring.upsell.drain()
    await services.gateway.guardrails.close()  # issue 15: the classifier's worker, if any
    await services.store.close()


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
