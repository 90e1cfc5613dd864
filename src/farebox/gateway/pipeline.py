"""The request path: plan policy, routing, forwarding with failover, metering, ledger.

Authentication happens before (``farebox.gateway.auth``); HTTP parsing and rendering around it
(``farebox.api``). Stages do no I/O except through the providers and ledger handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from random import random
from typing import Any, TypeVar

import orjson

from farebox.config.settings import RoutingSettings
from farebox.core.budgets import Hold
from farebox.core.money import format_usd
from farebox.core.plans import Plan
from farebox.core.records import ApiKey, LedgerEntry, Tenant
from farebox.core.routing import Router, Target, weighted_order
from farebox.core.tokens import estimate_input, estimate_messages
from farebox.core.usage import Usage
from farebox.errors import (
    BudgetExceeded,
    FareboxError,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    NoDeployment,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTranslationFailed,
)
from farebox.gateway.admission import Admission, Budgets, Scope
from farebox.gateway.auth import Principal
from farebox.gateway.breakers import Breakers, deployment_rows
from farebox.gateway.call import Call, entry, estimated, placeholder, replace, scope_of, with_ttft
from farebox.gateway.ledger import LedgerWriter
from farebox.gateway.policy import apply_policy
from farebox.gateway.rate_limits import RateLimits, limit_json
from farebox.gateway.rate_limits import headers as limit_headers
from farebox.gateway.render import render_body, stream_renderer
from farebox.gateway.sizes import (
    check_choices_fit,
    check_dimensions,
    check_output_cap,
    clamp_output,
    output_cap,
)
from farebox.gateway.stream_meter import StreamMeter, close_quietly
from farebox.providers.base import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Provider,
    StreamItem,
    UsageReport,
)

UNLIMITED = "unlimited"
DEFAULT_DEADLINE_S = 60.0  # how long retries may go on when the plan sets no timeout
log = logging.getLogger("farebox.gateway.pipeline")
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
    async def chat(
        self, principal: Principal, body: dict[str, Any], request_id: str, flavor: str = "openai"
    ) -> Reply | StreamReply:
        """A chat request in OpenAI shape; ``flavor`` is the format the client gets back."""
        plan = self.plan_for(principal)
        model = body["model"]
        targets = self._targets(plan, model, ("chat", "reasoning"))
        input_tokens = estimate_messages(body.get("messages"))
        cap = output_cap(targets)
        check_output_cap(body, cap, flavor)
        apply_policy(plan, body, input_tokens)
        clamp_output(body, cap)
        endpoint = "messages" if flavor == "anthropic" else "chat.completions"
        call = Call(principal, plan, endpoint, model, request_id, body, self._clock())
        call.flavor = flavor
        self._ledger.ensure_available()
        targets = await self._admit(call, targets, input_tokens)
        async with self._owned(call, targets):
            check_choices_fit(body, call.admission.max_tokens if call.admission else None)
            if body.get("stream"):
                return await self._open_stream(call, targets)
            return await self._chat_once(call, targets)

    def _upstream_body(self, call: Call, target: Target, stream: bool) -> dict[str, Any]:
        upstream = dict(call.body)
        upstream["model"] = target.model
        if stream:
            options = dict(upstream.get("stream_options") or {})
            options["include_usage"] = True
            upstream["stream_options"] = options
        return upstream

    # owning the admission ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _owned(self, call: Call, targets: tuple[Target, ...]) -> AsyncIterator[None]:
        """Own ``call``'s admission from ``_admit`` until its ledger entry settles it, on every
        way out: an error answers with an unbilled entry, a bug in a provider or translator
        with a 502, a cancellation (the client went away) with an entry written behind it."""
        try:
            yield
        except FareboxError as exc:
            if _unended(call):
                await self._record_failure(call, call.target or targets[0], exc)
            raise
        except Exception:
            log.exception("request %s: a provider or translator failed", call.request_id)
            billed = call.settled
            if not billed:
                await self._record_bug(call, call.target or targets[0])
            raise _translation_failed(call.request_id, billed) from None
        except BaseException:  # cancelled: write its entry behind it, without awaiting
            if _unended(call):
                self._abandon(call, call.target or targets[0])
            raise

    def _abandon(self, call: Call, target: Target) -> None:
        """End the admission of a request that went away before its entry was written: the
        prompt is metered (estimated) if it was sent upstream, nothing otherwise."""
        call.settled = True
        sent = call.target is not None
        usage = Usage(input_tokens=_prompt_tokens(call)) if sent else Usage()
        gone = self._entry(call, target, usage, "client_disconnected", 499, 0.0)
        gone = estimated(gone) if sent else gone
        self._ledger.submit(gone)
        self._finished(gone, call.admission)

    async def _failover(
        self,
        call: Call,
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
                call.target = target
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

    async def _chat_once(self, call: Call, targets: tuple[Target, ...]) -> Reply:
        async def attempt(target: Target) -> ChatResult:
            body = self._upstream_body(call, target, False)
            return await self._providers[target.provider].chat(
                ChatRequest(body, _timeout(call.plan, target))
            )

        target, result = await self._failover(call, targets, attempt)
        served = self._entry(call, target, result.usage, "ok", 200, result.upstream_ms)
        await self._settle(call, served)
        body = render_body(call.flavor, result.body, call.request_id)
        return Reply(body, self._headers(call, target, served))

    # streams -----------------------------------------------------------------------
    async def _open_stream(self, call: Call, targets: tuple[Target, ...]) -> StreamReply:
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
        relay = self._relay(call, target, first, items)
        try:
            await anext(relay)  # runs into the relay's try: from here on it owns the admission
        except BaseException:
            await close_quietly(items)
            raise
        call.settled = True
        return StreamReply(headers, relay)

    async def _relay(
        self,
        call: Call,
        target: Target,
        first: StreamItem | None,
        items: AsyncIterator[StreamItem],
    ) -> AsyncIterator[bytes]:
        """Relay the stream; the ledger entry is durable before the final bytes leave.

        Primed by ``_open_stream`` (the empty first item) so that its ``finally`` owns the
        admission even if the stream is closed before the client reads a byte."""
        out = stream_renderer(call.flavor, call.body, target.model, call.request_id)
        meter = StreamMeter(call.body, call.started)
        settled = False  # a ledger entry was written, or its write was attempted and failed
        try:
            yield b""
            item = first
            while item is not None:
                if isinstance(item, UsageReport):
                    record = self._stream_entry(call, target, meter, item.usage, "ok")
                    settled = True
                    await self._settle(call, record)
                    if data := out.usage(item.chunk, record):
                        yield data
                else:
                    meter.see(item)
                    if data := out.chunk(item):
                        yield data
                item = await anext(items, None)
            if not settled:  # the upstream never reported usage: meter it ourselves
                record = estimated(self._stream_entry(call, target, meter, meter.usage(), "ok"))
                settled = True
                await self._settle(call, record)
                if data := out.usage(meter.usage_chunk(record), record):
                    yield data
            if data := out.done():
                yield data
        except Exception as exc:  # not GeneratorExit/CancelledError: those are disconnects
            error = _stream_error(call.request_id, exc)
            if not settled:
                settled = True
                status = (
                    "upstream_interrupted" if isinstance(exc, UpstreamError) else "gateway_error"
                )
                record = self._stream_entry(call, target, meter, meter.usage(), status)
                await self._append_logged(call, estimated(record, error.error_code))
            yield out.error(error)
        finally:
            if not settled:  # the client went away: meter what was produced
                record = self._stream_entry(
                    call, target, meter, meter.usage(), "client_disconnected"
                )
                self._ledger.submit(replace(estimated(record), http_status=499))
                self._finished(record, call.admission)
            await close_quietly(items)

    def _stream_entry(
        self, call: Call, target: Target, meter: StreamMeter, usage: Usage, status: str
    ) -> LedgerEntry:
        record = self._entry(call, target, usage, status, 200, meter.elapsed_ms())
        return with_ttft(record, meter)

    async def _append_logged(self, call: Call, record: LedgerEntry) -> None:
        try:
            await self._settle(call, record)
        except Exception:
            log.exception("could not record ledger entry %s", record.request_id)

    # embeddings ----------------------------------------------------------------------
    async def embed(self, principal: Principal, body: dict[str, Any], request_id: str) -> Reply:
        plan = self.plan_for(principal)
        model = body["model"]
        targets = self._targets(plan, model, ("embedding",))
        check_dimensions(body, targets)
        call = Call(principal, plan, "embeddings", model, request_id, body, self._clock())
        self._ledger.ensure_available()
        targets = await self._admit(call, targets, estimate_input(body.get("input")), output=False)

        async def attempt(target: Target) -> EmbedResult:
            upstream = {**body, "model": target.model}
            return await self._providers[target.provider].embed(
                EmbedRequest(upstream, _timeout(plan, target))
            )

        async with self._owned(call, targets):
            target, result = await self._failover(call, targets, attempt)
            served = self._entry(call, target, result.usage, "ok", 200, result.upstream_ms)
            await self._settle(call, served)
            return Reply(orjson.dumps(result.body), self._headers(call, target, served))

    # budgets ---------------------------------------------------------------------------
    async def _admit(
        self, call: Call, targets: tuple[Target, ...], input_tokens: int, output: bool = True
    ) -> tuple[Target, ...]:
        """Reserve the worst case against every budget in scope; clamp ``max_tokens`` or
        walk the plan's downgrade chain when it does not fit; else ``BudgetExceeded``."""
        budgets = self._budgets
        if budgets is None:
            return targets
        scope = scope_of(call)
        now = self._clock()
        scoped = budgets.holds(scope, now) if budgets.enabled(scope) else []
        limits = self._limit_holds(call, scope, now)
        if not scoped and not limits:
            return targets
        body, chain = call.body, dict(call.plan.downgrade)
        field_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        wanted = (body.get(field_name) or budgets.default_max_tokens()) if output else 0
        choices = (body.get("n") or 1) if output else 1  # each choice may use max_tokens
        model, seen = call.model, {call.model}
        if scoped and model in chain and await budgets.should_downgrade(scope):
            model, targets = self._downgraded(call.plan, chain, model, targets, seen)
        while True:
            first = targets[0]

            def unsettled(rid: str, amount: int, target: Target = first) -> LedgerEntry:
                return placeholder(call, target, rid, amount)

            prices = [t.price for t in targets]
            per_choice = min(wanted, output_cap(targets)) if output else 0
            result = await budgets.admit(
                scope, scoped, prices, input_tokens, per_choice * choices, unsettled, limits
            )
            if isinstance(result, Admission):
                call.admission = result
                if output and scoped:
                    body[field_name] = max(result.max_tokens // choices, 1)
                return targets
            if not isinstance(result, BudgetExceeded):
                raise result  # a rate limit: a cheaper model would not help
            if chain.get(model) in seen or model not in chain:
                raise result
            model, targets = self._downgraded(call.plan, chain, model, targets, seen)

    def _limit_holds(self, call: Call, scope: Scope, now: float) -> list[Hold]:
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
        return deployment_rows(self._router, self._breakers.snapshot() if self._breakers else [])

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

    async def _settle(self, call: Call, record: LedgerEntry) -> None:
        """Write the entry durably; the store settles its reservation in that transaction.
        Once this starts, the admission's end is taken care of (``call.settled``)."""
        call.settled = True
        try:
            await self._ledger.append(record)
        finally:
            self._finished(record, call.admission)

    def _finished(self, entry: LedgerEntry, admission: Admission | None) -> None:
        if self._observe is not None:
            self._observe(entry)
        if self._budgets is not None:
            self._budgets.finished(admission, entry.cost, entry.tenant_id)

    # metering ------------------------------------------------------------------------
    def _entry(self, call: Call, target: Target, usage: Usage, status: str, http_status: int,
               upstream_ms: float, **extra: Any) -> LedgerEntry:  # fmt: skip
        return entry(call, target, usage, status, http_status, upstream_ms, self._clock(), **extra)

    async def _record_bug(self, call: Call, target: Target) -> None:
        """A provider or translator raised: an unbilled ``gateway_error`` entry."""
        failed = self._entry(call, target, Usage(), "gateway_error", 502, 0.0)
        await self._settle(call, replace(failed, error_code=UpstreamTranslationFailed.code))

    async def _record_failure(self, call: Call, target: Target, exc: FareboxError) -> None:
        status = getattr(exc, "upstream_status", 0) or exc.status
        failed = self._entry(call, target, Usage(), "error", status, 0.0)
        await self._settle(call, replace(failed, error_code=exc.error_code))

    def _base_headers(self, call: Call, target: Target) -> dict[str, str]:
        headers = {"x-farebox-request-id": call.request_id, "x-farebox-model": target.model}
        if call.admission is not None and call.admission.limited:
            headers.update(limit_headers(call.admission.states, self._clock()))
        return headers

    def _headers(self, call: Call, target: Target, entry: LedgerEntry) -> dict[str, str]:
        headers = self._base_headers(call, target)
        headers["x-farebox-cost-usd"] = format_usd(entry.cost)
        admission = call.admission
        left = admission.remaining_after(entry.cost) if admission else None
        headers["x-farebox-budget-remaining-usd"] = UNLIMITED if left is None else format_usd(left)
        return headers


def _backoff(routing: RoutingSettings, round_: int, error: UpstreamError | None) -> float:
    """Jittered exponential backoff, or what the upstream asked for when it asked for more."""
    delay = min(routing.backoff_s * 2.0**round_, routing.max_backoff_s) * (0.5 + random() / 2)
    if error is not None and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


def _timeout(plan: Plan, target: Target) -> float:
    """The plan's upstream timeout, never longer than the provider's own."""
    return min(plan.timeout_s or target.timeout_s, target.timeout_s)


def _unended(call: Call) -> bool:
    """No ledger entry is on its way for ``call`` although it needs one: it holds a
    reservation, or it was sent upstream."""
    return not call.settled and (call.admission is not None or call.target is not None)


def _prompt_tokens(call: Call) -> int:
    if call.endpoint == "embeddings":
        return estimate_input(call.body.get("input"))
    return estimate_messages(call.body.get("messages"))


def _translation_failed(request_id: str, billed: bool) -> UpstreamTranslationFailed:
    outcome = (
        "The request was served and recorded in the ledger, but its answer could not be translated."
        if billed
        else "Nothing was billed."
    )
    return UpstreamTranslationFailed(
        f"The gateway failed to translate this request or its answer (a bug, logged as "
        f"{request_id}). {outcome}",
        headers={"x-should-retry": "false"},
    )


def _stream_error(request_id: str, exc: Exception) -> FareboxError:
    """What a stream that failed midway tells its client."""
    if isinstance(exc, FareboxError):
        return exc
    log.exception("request %s: the stream relay failed", request_id)
    return UpstreamTranslationFailed(
        f"The gateway failed while relaying this stream (a bug, logged as {request_id}); "
        "the tokens sent before the error are billed."
    )
