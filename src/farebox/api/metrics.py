"""``GET /metrics``: the Prometheus text format, behind an optional bearer token.

The per-request families come from ``farebox.observe.metrics`` (in multiprocess mode, every
worker's); the gauges read at scrape time (breakers, billing export, budgets, anomaly
incidents) from ``farebox.observe.metrics_scrape``, fed by ``read_state`` below. Not under
``/admin``: a scraper is given its own token (``metrics.token``), never the admin key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from farebox.api.context import Services
from farebox.api.errors import error_response
from farebox.api.fastpath import FastRoute, Incoming
from farebox.billing.exporter import Exporter
from farebox.core.budgets import HoldState
from farebox.errors import AuthenticationError
from farebox.gateway.budget_scope import Scope as BudgetScope
from farebox.observe.metrics import RequestMetrics
from farebox.observe.metrics_scrape import (
    BREAKER_STATES,
    BudgetState,
    ScrapeGauges,
    SinkState,
    Snapshot,
)

PATH = "/metrics"
MAX_BUDGET_TENANTS = 500  # tenant budgets read per scrape (tenant_labels only): the most seen


class TextBody:
    """A pre-rendered Prometheus page."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", str(len(self.body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def token_check(token: str | None) -> tuple[bool, bytes]:
    """(whether a token is needed, its digest): compared in constant time, whatever its length."""
    return token is not None, hashlib.sha256((token or "").encode()).digest()


def presented_token(headers: dict[str, str]) -> bytes | None:
    auth = headers.get("authorization")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()


def routes(services: Services, metrics: RequestMetrics, exporter: Exporter) -> list[FastRoute]:
    """``/metrics``, for an app whose metrics are on."""
    tenant_labels = metrics.tenant_labels

    async def read() -> Snapshot:
        return await read_state(services, exporter, metrics)

    gauges = ScrapeGauges(read, tenant_labels=tenant_labels)
    registry = metrics.scrape_registry(gauges)
    needed, digest = token_check(services.settings.metrics_token)

    async def scrape(request: Incoming) -> TextBody | Response:
        if needed:
            presented = presented_token(request.headers)
            if presented is None or not hmac.compare_digest(presented, digest):
                return error_response(_refused(presented is None))
        await gauges.refresh()
        # off the event loop: in multiprocess mode this reads every worker's files
        return TextBody(await asyncio.to_thread(generate_latest, registry))

    return [FastRoute(PATH, scrape, ["GET"])]


def _refused(missing: bool) -> AuthenticationError:
    what = "needs" if missing else "was sent a wrong"
    return AuthenticationError(
        f"GET /metrics {what} bearer token: send 'Authorization: Bearer <token>' with the "
        "value of the environment variable metrics.token names.",
        code="invalid_metrics_token",
        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
    )


async def read_state(services: Services, exporter: Exporter, metrics: RequestMetrics) -> Snapshot:
    """Everything the scrape-time gauges show, read once (bounded: the exporter counts at
    most its batch bound of pending entries; budgets only of the global scope, and with
    tenant labels of at most ``MAX_BUDGET_TENANTS`` tenants this process served)."""
    breakers = {d["deployment"]: BREAKER_STATES.get(d["state"], 0)
                for d in services.gateway.deployments()}  # fmt: skip
    sinks = []
    for name, lag in (await exporter.lag()).items():
        dead = await services.store.dead_letter_count(name)
        sinks.append(SinkState(name, lag["pending_entries"], lag["lag_s"], dead))
    tenants = metrics.tenants_seen(MAX_BUDGET_TENANTS) if metrics.tenant_labels else ()
    incidents = await services.store.traffic.incidents(open_only=True)
    return Snapshot(
        breakers=breakers,
        sinks=tuple(sinks),
        budgets=tuple(await _budgets(services, tenants)),
        incidents=dict(Counter(i.tenant_id for i in incidents)),
    )


async def _budgets(services: Services, tenants: Iterable[str]) -> list[BudgetState]:
    budgets = services.budgets
    gateway_wide = BudgetScope(tenant="", key="", feature=None, user=None, plan="")
    states = [s for s in await budgets.states(gateway_wide) if s.hold.scope == "global"]
    out = [_budget(s, "") for s in states]
    for tenant_id in tenants:
        tenant = await services.store.get_tenant(tenant_id)
        if tenant is None:
            continue
        scope = BudgetScope.of(tenant, None, services.gateway.plan_name(tenant))
        out += [_budget(s, tenant_id) for s in await budgets.states(scope)
                if s.hold.scope == "tenant"]  # fmt: skip
    return out


def _budget(state: HoldState, tenant: str) -> BudgetState:
    hold = state.hold
    return BudgetState(hold.scope, hold.period, hold.name or "", tenant,
                       state.used + state.reserved, state.limit)  # fmt: skip
