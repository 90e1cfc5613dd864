"""``GET /v1/me``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from farebox.api.admin.cache import cache_stats, month_span
from farebox.api.admin.guardrails import me_route as me_findings_route
from farebox.api.admin.requests import me_route
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute, Incoming, JSONBody
from farebox.api.openai import guarded
from farebox.core.money import PICO_PER_USD
from farebox.gateway.budget_scope import Scope, state_json
from farebox.gateway.routing_table import policy_json


def _json(body: dict[str, Any], status: int = 200, request_id: str | None = None) -> JSONBody:
    headers = {"x-farebox-request-id": request_id} if request_id else None
    return JSONBody(orjson.dumps(body), status, headers)


def routes(services: Services) -> list[FastRoute]:
    async def me(request: Incoming, request_id: str) -> JSONBody:
        who = await services.principal(request)
        plan = services.gateway.plan_for(who)
        body = {
            "object": "farebox.me",
            "tenant": {"id": who.tenant.id, "name": who.tenant.name},
            "key": {"id": who.key.id, "name": who.key.name, "kind": who.key.kind},
            "plan": plan.name,
            "models": [name for name, _ in services.gateway.models_for(who)],
            "max_tokens": plan.max_tokens,
            "policy": policy_json(plan),
            "client_ip": who.client_ip,
            "rate_limits": services.gateway.limits_for(who),
            "budgets": [
                state_json(s)
                for s in await services.budgets.states(
                    Scope.of(
                        who.tenant, who.key, plan.name, who.feature, who.user, who.workspace_scope()
                    )
                )
            ],
            # this month's cache traffic and what the cache holds: the caller's tenant only
            "cache": await cache_stats(services.store, services.cache, who.tenant.id, month_span()),
        }
        book = services.budgets.credits
        if plan.credits is not None and book is not None:  # a prepaid tenant: its balance
            view = (await book.balance(who.tenant.id)).view(plan.credits.rate)
            view.pop("grants")
            body["credits"] = {**view, "per_usd": plan.credits.rate.credits(PICO_PER_USD)}
        return _json(body, request_id=request_id)

    async def healthz(request: Incoming) -> JSONBody:
        return _json({"status": "ok"})

    async def readyz(request: Incoming) -> JSONBody:
        """Ready when the stores answer within ``timeouts.readyz_s``; 503 otherwise, in
        that time at most (a stalled database is not waited for)."""
        try:
            async with asyncio.timeout(services.settings.file.timeouts.readyz_s):
                store = bool(await services.store.ping())
        except Exception:  # an error or the deadline: not ready, whatever the reason
            store = False
        ledger = services.ledger.available
        ok = store and ledger
        body = {"status": "ready" if ok else "unavailable", "store": store, "ledger": ledger}
        return _json(body, 200 if ok else 503)

    return [
        FastRoute("/v1/me", guarded(services, me), ["GET"]),
        me_route(services),  # /v1/me/requests: the caller's tenant's request log
        me_findings_route(services),  # /v1/me/guardrails/findings (issue 15)
        FastRoute("/healthz", healthz, ["GET"]),
        FastRoute("/readyz", readyz, ["GET"]),
    ]
