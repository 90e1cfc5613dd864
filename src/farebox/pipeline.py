"""The request path: plan policy, routing, forwarding with failover, metering, ledger.

Authentication happens before (``farebox.auth``); HTTP parsing and rendering around it
(``farebox.api``). Stages do no I/O except through the providers and ledger handed in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from random import random
from typing import Any, TypeVar

import orjson

from farebox.auth import Principal
from farebox.breakers import Breakers, deployment
from farebox.budgeting import Admission, Budgets, Scope
from farebox.config import RoutingSettings
from farebox.core.budgets import Hold
from farebox.core.money import format_usd
from farebox.core.plans import Plan
from farebox.core.pricing import cost
from farebox.core.records import ApiKey, LedgerEntry, Tenant
from farebox.core.routing import Router, Target, weighted_order
from farebox.core.tokens import estimate_input, estimate_messages
from farebox.core.tools import DENY, tool_names
from farebox.core.usage import Usage
from farebox.errors import (
    BudgetExceeded,
    FareboxError,
    InputTooLarge,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    NoDeployment,
    ToolDenied,
    ToolRequiresApproval,
    UpstreamError,
    UpstreamRateLimited,
)
from farebox.ledger import LedgerWriter
from farebox.limits import RateLimits, limit_json
from farebox.limits import headers as limit_headers
from farebox.providers.base import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Provider,
    StreamItem,
    UsageReport,
)
from farebox.renderers import render_body, stream_renderer
from farebox.streams import StreamMeter, close_quietly, stream_failure

UNLIMITED = "unlimited"
DEFAULT_DEADLINE_S = 60.0  # how long retries may go on when the plan sets no timeout
log = logging.getLogger("farebox.pipeline")
T = TypeVar("T")


def new_request_id() -> str:
    return f"req_{os.urandom(16).hex()}"


@dataclass(slots=True)
class Reply:
    body: bytes
    headers: dict[str, str]
    status: int = 200


@dataclass(slots=True)
class StreamReply:
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


@dataclass(slots=True)
class _Call:
    """What one request carries through the path."""

    principal: Principal
    plan: Plan
    endpoint: str
    model: str
    request_id: str
    body: dict[str, Any]
    started_wall: float
    started: float = field(default_factory=time.perf_counter)
    admission: Admission | None = None
    flavor: str = "openai"  # the client's format: openai | anthropic

    @property
    def reservation_id(self) -> str | None:
        return self.admission.reservation_id if self.admission else None


class Gateway:
    def __init__(
        self,
        *,
        router: Router,
        plans: Mapping[str, Plan],
        providers: Mapping[str, Provider],
        ledger: LedgerWriter,
        budgets: Budgets | None = None,
        limits: RateLimits | None = None,
        breakers: Breakers | None = None,
        routing: RoutingSettings | None = None,
        default_plan: str = "default",
        clock: Callable[[], float] = time.time,
        observe: Callable[[LedgerEntry], None] | None = None,
    ) -> None:
        self._observe = observe  # the anomaly detector's counter: sees every entry
        self._router = router
        self._plans = plans
        self._providers = providers
        self._ledger = ledger
        self._budgets = budgets
        self._limits = limits
        self._breakers = breakers
        self._routing = routing or RoutingSettings()
        self._default_plan = default_plan
        self._clock = clock

    # plans and models ----------------------------------------------------------
    def plan_name(self, tenant: Tenant) -> str:
        return tenant.plan if tenant.plan in self._plans else self._default_plan

    def plan_for(self, principal: Principal) -> Plan:
        plan = self._plans.get(principal.tenant.plan)
        return plan if plan is not None else self._plans[self._default_plan]

    def models_for(self, principal: Principal) -> list[tuple[str, str]]:
        """``(model, owner)`` pairs this principal may call."""
        plan = self.plan_for(principal)
        out = []
        for name in self._router.names():
            targets = self._router.resolve(name) or ()
            if plan.allows(name) and targets:
                out.append((name, targets[0].provider))
        return out

    def _targets(self, plan: Plan, model: str, kinds: tuple[str, ...]) -> tuple[Target, ...]:
        targets = self._router.resolve(model)
        if not targets:
            raise ModelNotFound(
                f"The model {model!r} does not exist or is not served by this gateway.",
                param="model",
            )
        if not plan.allows(model):
            allowed = [n for n in self._router.names() if plan.allows(n)]
            raise ModelNotAllowed(
                f"Your plan {plan.name!r} does not include the model {model!r}. "
                f"Allowed models: {', '.join(allowed) or '(none)'}.",
                param="model",
                extra={"allowed_models": allowed},
            )
        usable = weighted_order(tuple(t for t in targets if t.kind in kinds), random())
        if not usable:
            raise InvalidRequest(
                f"The model {model!r} cannot serve this endpoint.",
                param="model",
                code="model_not_supported",
            )
        return usable

    # chat ------------------------------------------------------------------------
    def _apply_policy(self, plan: Plan, body: dict[str, Any], input_tokens: int) -> None:
        if plan.tools.enabled:
            verdict = plan.tools.check(tool_names(body))
            if verdict is not None:
                error = ToolDenied if verdict.kind == DENY else ToolRequiresApproval
                raise error(verdict.message(), param="tools", extra={"tool": verdict.name})
        field_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        requested = body.get(field_name)
        if plan.max_tokens is not None:
            if requested is None:
                body[field_name] = plan.max_tokens
            elif requested > plan.max_tokens:
                if plan.max_tokens_policy == "reject":
                    raise InvalidRequest(
                        f"{field_name} {requested} exceeds your plan's limit of {plan.max_tokens}.",
                        param=field_name,
                        code="max_tokens_exceeded",
                    )
                body[field_name] = plan.max_tokens
        if plan.max_input_chars is not None:
            size = len(orjson.dumps(body.get("messages")))
            if size > plan.max_input_chars:
                raise InputTooLarge(
                    f"The input is {size} characters; your plan allows {plan.max_input_chars}.",
                    param="messages",
                    extra={"limit": plan.max_input_chars, "unit": "characters"},
                )
        if plan.max_input_tokens is not None and input_tokens > plan.max_input_tokens:
            raise InputTooLarge(
                f"The input is about {input_tokens} tokens; your plan allows "
                f"{plan.max_input_tokens}.",
                param="messages",
                extra={"limit": plan.max_input_tokens, "unit": "tokens"},
            )

    async def chat(
        self, principal: Principal, body: dict[str, Any], request_id: str, flavor: str = "openai"
    ) -> Reply | StreamReply:
        """A chat request in OpenAI shape; ``flavor`` is the format the client gets back."""
        plan = self.plan_for(principal)
        model = body["model"]
        targets = self._targets(plan, model, ("chat", "reasoning"))
        input_tokens = estimate_messages(body.get("messages"))
        self._apply_policy(plan, body, input_tokens)
        endpoint = "messages" if flavor == "anthropic" else "chat.completions"
        call = _Call(principal, plan, endpoint, model, request_id, body, self._clock())
        call.flavor = flavor
        self._ledger.ensure_available()
        targets = await self._admit(call, targets, input_tokens)
        if body.get("stream"):
            return await self._open_stream(call, targets)
        return await self._chat_once(call, targets)

    def _upstream_body(self, call: _Call, target: Target, stream: bool) -> dict[str, Any]:
        upstream = dict(call.body)
        upstream["model"] = target.model
        if stream:
            options = dict(upstream.get("stream_options") or {})
            options["include_usage"] = True
            upstream["stream_options"] = options
        return upstream

    async def _failover(
        self,
        call: _Call,
        targets: tuple[Target, ...],
        attempt: Callable[[Target], Awaitable[T]],
    ) -> tuple[Target, T]:
        """Try each usable deployment in order; fail over on retryable upstream errors only.
        Deployments whose breaker is open are skipped. When a whole round failed, wait with
        jittered exponential backoff (or as long as the upstream asked, within the plan's
        timeout) and go round again, up to ``routing.retries`` times."""
        routing, breakers = self._routing, self._breakers
        deadline = time.monotonic() + (call.plan.timeout_s or DEFAULT_DEADLINE_S)
        last: tuple[Target, UpstreamError] | None = None
        for round_ in range(routing.retries + 1):
            tried = False
            for target in targets:
                if breakers is not None and not await breakers.acquire(target):
                    continue  # its breaker is open: skipped at no cost
                tried = True
                try:
                    result = await attempt(target)
                except UpstreamError as exc:
                    if breakers is not None:
                        breakers.record(target, not exc.retryable)
                    if not exc.retryable:
                        await self._record_failure(call, target, exc)
                        raise
                    last = (target, exc)
                    continue
                except BaseException:
                    if breakers is not None:
                        breakers.release(target)
                    raise
                if breakers is not None:
                    breakers.record(target, True)
                return target, result
            delay = _backoff(routing, round_, last[1] if last else None)
            if not tried or round_ == routing.retries or time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
        if last is None:
            raise NoDeployment(
                f"Every deployment of {call.model!r} is unavailable (circuit breakers open); "
                "retry shortly.",
                headers={"Retry-After": "1"},
            )
        target, error = last
        await self._record_failure(call, target, error)
        if error.upstream_status == 429:  # the upstream's own rate limit: let the client wait
            raise UpstreamRateLimited(error.message, headers=error.headers, extra=error.extra)
        raise error

    async def _chat_once(self, call: _Call, targets: tuple[Target, ...]) -> Reply:
        async def attempt(target: Target) -> ChatResult:
            body = self._upstream_body(call, target, False)
            return await self._providers[target.provider].chat(
                ChatRequest(body, _timeout(call.plan, target))
            )

        target, result = await self._failover(call, targets, attempt)
        entry = self._entry(call, target, result.usage, "ok", 200, result.upstream_ms)
        await self._settle(entry, call.admission)
        body = render_body(call.flavor, result.body, call.request_id)
        return Reply(body, self._headers(call, target, entry))

    # streams -----------------------------------------------------------------------
    async def _open_stream(self, call: _Call, targets: tuple[Target, ...]) -> StreamReply:
        """Open the upstream stream, failing over until the first item arrives."""

        async def attempt(target: Target) -> tuple[StreamItem | None, AsyncIterator[StreamItem]]:
            body = self._upstream_body(call, target, True)
            items = self._providers[target.provider].chat_stream(
                ChatRequest(body, _timeout(call.plan, target))
            )
            try:
                return await anext(items, None), items
            except BaseException:
                await close_quietly(items)
                raise

        target, (first, items) = await self._failover(call, targets, attempt)
        headers = self._base_headers(call, target)
        return StreamReply(headers, self._relay(call, target, first, items))

    async def _relay(
        self,
        call: _Call,
        target: Target,
        first: StreamItem | None,
        items: AsyncIterator[StreamItem],
    ) -> AsyncIterator[bytes]:
        """Relay the stream; the ledger entry is durable before the final bytes leave."""
        out = stream_renderer(call.flavor, call.body, target.model, call.request_id)
        meter = StreamMeter(call.body, call.started)
        settled = False  # a ledger entry was written, or its write was attempted and failed
        try:
            item = first
            while item is not None:
                if isinstance(item, UsageReport):
                    entry = self._stream_entry(call, target, meter, item.usage, "ok")
                    settled = True
                    await self._settle(entry, call.admission)
                    if data := out.usage(item.chunk, entry):
                        yield data
                else:
                    meter.see(item)
                    if data := out.chunk(item):
                        yield data
                item = await anext(items, None)
            if not settled:  # the upstream never reported usage: meter it ourselves
                entry = _estimated(self._stream_entry(call, target, meter, meter.usage(), "ok"))
                settled = True
                await self._settle(entry, call.admission)
                if data := out.usage(meter.usage_chunk(entry), entry):
                    yield data
            if data := out.done():
                yield data
        except Exception as exc:  # not GeneratorExit/CancelledError: those are disconnects
            error = stream_failure(exc)
            if not settled:
                settled = True
                status = (
                    "upstream_interrupted" if isinstance(exc, UpstreamError) else "gateway_error"
                )
                entry = self._stream_entry(call, target, meter, meter.usage(), status)
                await self._append_logged(_estimated(entry, error.error_code), call.admission)
            yield out.error(error)
        finally:
            if not settled:  # the client went away: meter what was produced
                entry = self._stream_entry(
                    call, target, meter, meter.usage(), "client_disconnected"
                )
                self._ledger.submit(_replace(_estimated(entry), http_status=499))
                self._finished(entry, call.admission)
            await close_quietly(items)

    def _stream_entry(
        self, call: _Call, target: Target, meter: StreamMeter, usage: Usage, status: str
    ) -> LedgerEntry:
        entry = self._entry(call, target, usage, status, 200, meter.elapsed_ms())
        return _with_ttft(entry, meter)

    async def _append_logged(self, entry: LedgerEntry, admission: Admission | None) -> None:
        try:
            await self._settle(entry, admission)
        except Exception:
            log.exception("could not record ledger entry %s", entry.request_id)

    # embeddings ----------------------------------------------------------------------
    async def embed(self, principal: Principal, body: dict[str, Any], request_id: str) -> Reply:
        plan = self.plan_for(principal)
        model = body["model"]
        targets = self._targets(plan, model, ("embedding",))
        call = _Call(principal, plan, "embeddings", model, request_id, body, self._clock())
        self._ledger.ensure_available()
        targets = await self._admit(call, targets, estimate_input(body.get("input")), output=False)

        async def attempt(target: Target) -> EmbedResult:
            upstream = {**body, "model": target.model}
            return await self._providers[target.provider].embed(
                EmbedRequest(upstream, _timeout(plan, target))
            )

        target, result = await self._failover(call, targets, attempt)
        entry = self._entry(call, target, result.usage, "ok", 200, result.upstream_ms)
        await self._settle(entry, call.admission)
        return Reply(orjson.dumps(result.body), self._headers(call, target, entry))

    # budgets ---------------------------------------------------------------------------
    async def _admit(
        self, call: _Call, targets: tuple[Target, ...], input_tokens: int, output: bool = True
    ) -> tuple[Target, ...]:
        """Reserve the worst case against every budget in scope; clamp ``max_tokens`` or
        walk the plan's downgrade chain when it does not fit; else ``BudgetExceeded``."""
        budgets = self._budgets
        if budgets is None:
            return targets
        scope = _scope(call)
        now = self._clock()
        scoped = budgets.holds(scope, now) if budgets.enabled(scope) else []
        limits = self._limit_holds(call, scope, now)
        if not scoped and not limits:
            return targets
        body, chain = call.body, dict(call.plan.downgrade)
        field_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        wanted = (body.get(field_name) or budgets.default_max_tokens()) if output else 0
        model, seen = call.model, {call.model}
        if scoped and model in chain and await budgets.should_downgrade(scope):
            model, targets = self._downgraded(call.plan, chain, model, targets, seen)
        while True:
            first = targets[0]

            def unsettled(rid: str, amount: int, target: Target = first) -> LedgerEntry:
                return _placeholder(call, target, rid, amount)

            prices = [t.price for t in targets]
            result = await budgets.admit(
                scope, scoped, prices, input_tokens, wanted, unsettled, limits
            )
            if isinstance(result, Admission):
                call.admission = result
                if output and scoped:
                    body[field_name] = result.max_tokens
                return targets
            if not isinstance(result, BudgetExceeded):
                raise result  # a rate limit: a cheaper model would not help
            if chain.get(model) in seen or model not in chain:
                raise result
            model, targets = self._downgraded(call.plan, chain, model, targets, seen)

    def _limit_holds(self, call: _Call, scope: Scope, now: float) -> list[Hold]:
        if self._limits is None:
            return []
        who = call.principal
        return self._limits.holds(scope.plan, who.tenant.rate_limits, who.key.rate_limits,
                                  tenant=scope.tenant, key=scope.key, user=scope.user,
                                  ip=who.client_ip, model=call.model, now=now)  # fmt: skip

    def limits_for(self, principal: Principal) -> list[dict[str, Any]]:
        """The rate limits in force for this principal, as /v1/me shows them."""
        return self.limits(self.plan_for(principal).name, principal.tenant, principal.key)

    def limits(
        self, plan: str, tenant: Tenant | None = None, key: ApiKey | None = None
    ) -> list[dict[str, Any]]:
        """A plan's rate limits with a tenant's and a key's overrides applied."""
        if self._limits is None:
            return []
        specs = self._limits.specs(
            plan, tenant.rate_limits if tenant else (), key.rate_limits if key else ()
        )
        return [limit_json(s) for s in specs]

    def plans(self) -> Mapping[str, Plan]:
        return self._plans

    def deployments(self) -> list[dict[str, Any]]:
        """Every deployment of every model, with its breaker state and call counts."""
        seen = {d["deployment"]: d for d in (self._breakers.snapshot() if self._breakers else [])}
        out: dict[str, dict[str, Any]] = {}
        for name in self._router.names():
            for target in self._router.resolve(name) or ():
                ident = deployment(target)
                row = out.get(ident)
                if row is None:
                    row = out[ident] = {
                        "deployment": ident, "provider": target.provider, "model": target.model,
                        "weight": target.weight, "aliases": [], "state": "closed",
                        "open_until": None, "successes": 0, "failures": 0, "failure_streak": 0,
                        **seen.get(ident, {}),
                    }  # fmt: skip
                row["aliases"].append(name)
        return list(out.values())

    def reload_plans(self, plans: Mapping[str, Plan], default_plan: str) -> None:
        self._plans = plans
        self._default_plan = default_plan

    def _downgraded(
        self,
        plan: Plan,
        chain: Mapping[str, str],
        model: str,
        targets: tuple[Target, ...],
        seen: set[str],
    ) -> tuple[str, tuple[Target, ...]]:
        cheaper = chain.get(model)
        found = self._router.resolve(cheaper) if cheaper and cheaper not in seen else None
        if not cheaper or not found:
            return model, targets
        seen.add(cheaper)
        kinds = {t.kind for t in targets}
        usable = tuple(t for t in found if t.kind in kinds) or targets
        return cheaper, usable

    async def _settle(self, entry: LedgerEntry, admission: Admission | None) -> None:
        """Write the entry durably; the store settles its reservation in that transaction."""
        try:
            await self._ledger.append(entry)
        finally:
            self._finished(entry, admission)

    def _finished(self, entry: LedgerEntry, admission: Admission | None) -> None:
        if self._observe is not None:
            self._observe(entry)
        if self._budgets is not None:
            self._budgets.finished(admission, entry.cost, entry.tenant_id)

    # metering ------------------------------------------------------------------------
    def _entry(
        self,
        call: _Call,
        target: Target,
        usage: Usage,
        status: str,
        http_status: int,
        upstream_ms: float,
        **extra: Any,
    ) -> LedgerEntry:
        price = cost(usage, target.price)
        principal = call.principal
        fields: dict[str, Any] = {
            "metadata": principal.metadata,
            "reservation_id": call.reservation_id,
            **extra,
        }
        return LedgerEntry(
            request_id=call.request_id,
            tenant_id=principal.tenant.id,
            key_id=principal.key.id,
            endpoint=call.endpoint,
            model_requested=call.model,
            model_served=target.model,
            provider=target.provider,
            status=status,
            http_status=http_status,
            started_at=call.started_wall,
            finished_at=self._clock(),
            user=principal.user or _openai_user(call.body),
            feature=principal.feature,
            stream=bool(call.body.get("stream")),
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost=price,
            revenue=call.plan.revenue.revenue(usage, price),
            latency_ms=(time.perf_counter() - call.started) * 1000,
            upstream_ms=upstream_ms,
            **fields,
        )

    async def _record_failure(self, call: _Call, target: Target, exc: FareboxError) -> None:
        status = getattr(exc, "upstream_status", 0) or exc.status
        entry = self._entry(call, target, Usage(), "error", status, 0.0)
        await self._settle(_replace(entry, error_code=exc.error_code), call.admission)

    def _base_headers(self, call: _Call, target: Target) -> dict[str, str]:
        headers = {"x-farebox-request-id": call.request_id, "x-farebox-model": target.model}
        if call.admission is not None and call.admission.limited:
            headers.update(limit_headers(call.admission.states, self._clock()))
        return headers

    def _headers(self, call: _Call, target: Target, entry: LedgerEntry) -> dict[str, str]:
        headers = self._base_headers(call, target)
        headers["x-farebox-cost-usd"] = format_usd(entry.cost)
        admission = call.admission
        left = admission.remaining_after(entry.cost) if admission else None
        headers["x-farebox-budget-remaining-usd"] = UNLIMITED if left is None else format_usd(left)
        return headers


def _replace(entry: LedgerEntry, **changes: Any) -> LedgerEntry:
    return dataclasses.replace(entry, **changes)


def _estimated(entry: LedgerEntry, error_code: str | None = None) -> LedgerEntry:
    return _replace(entry, usage_source="estimated", error_code=error_code)


def _with_ttft(entry: LedgerEntry, meter: StreamMeter) -> LedgerEntry:
    if meter.first_at is None:
        return entry
    return _replace(entry, ttft_ms=(meter.first_at - meter.started) * 1000)


def _placeholder(call: _Call, target: Target, rid: str, amount: int) -> LedgerEntry:
    """The ``unsettled`` entry a reclaimed lease leaves behind (no usage is known)."""
    who = call.principal
    return LedgerEntry(
        request_id=call.request_id,
        tenant_id=who.tenant.id,
        key_id=who.key.id,
        endpoint=call.endpoint,
        model_requested=call.model,
        model_served=target.model,
        provider=target.provider,
        status="unsettled",
        http_status=0,
        started_at=call.started_wall,
        finished_at=call.started_wall,
        user=who.user or _openai_user(call.body),
        feature=who.feature,
        metadata={**who.metadata, "reserved_usd": format_usd(amount)},
        stream=bool(call.body.get("stream")),
        error_code="lease_expired",
        reservation_id=rid,
    )


def _scope(call: _Call) -> Scope:
    who = call.principal
    user = who.user or _openai_user(call.body)
    return Scope.of(who.tenant, who.key, call.plan.name, who.feature, user)


def _backoff(routing: RoutingSettings, round_: int, error: UpstreamError | None) -> float:
    """Jittered exponential backoff, or what the upstream asked for when it asked for more."""
    delay = min(routing.backoff_s * 2.0**round_, routing.max_backoff_s) * (0.5 + random() / 2)
    if error is not None and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


def _timeout(plan: Plan, target: Target) -> float:
    """The plan's upstream timeout, never longer than the provider's own."""
    return min(plan.timeout_s or target.timeout_s, target.timeout_s)


def _openai_user(body: Mapping[str, Any]) -> str | None:
    user = body.get("user")
    return user[:256] if isinstance(user, str) and user else None
