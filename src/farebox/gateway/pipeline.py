"""The request path, stage by stage. ``Gateway.chat`` and ``Gateway.embed`` run them in order:

1. targets: the model's deployments the plan allows, in weighted order (``_targets``), that
   honour every field of the request (``providers.capabilities``);
2. sizes: what the client asked for against what the deployments can do (``sizes``);
3. policy: the plan's tool policy, ``max_tokens`` and input limits (``policy``);
3b. cache: when the plan caches, an answer found in the response cache is served at once, with
   no provider call and no budget held (``cache``, ``cache_hits``); a miss goes on, and its
   answer is stored once served;
4. admission: reserve the worst case against budgets and rate limits (``admission``);
5. forwarding, owned: from here on every way out ends the admission exactly once
   (``metering.Metering.owned``); deployments are tried with failover (``failover``),
   streams are relayed (``relay``);
6. metering: the ledger entry that settles the reservation (``metering``);
7. reply: the body in the client's format, with cost and limit headers (``render``).

Authentication happens before (``farebox.gateway.auth``); HTTP parsing and rendering of errors
around it (``farebox.api``). Stages do no I/O except through the providers and ledger handed in.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from random import random
from typing import TYPE_CHECKING, Any

import orjson

from farebox.config.settings import RoutingSettings
from farebox.core.plans import Plan
from farebox.core.records import ApiKey, LedgerEntry, Tenant, Workspace
from farebox.core.routing import Router, Target, weighted_order
from farebox.core.tokens import estimate_input, estimate_messages
from farebox.errors import (
    GuardrailBlocked,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    UpstreamError,
)
from farebox.gateway.admission import Budgets
from farebox.gateway.auth import Principal
from farebox.gateway.breakers import Breakers, deployment_rows
from farebox.gateway.cache import ResponseCache
from farebox.gateway.cache_embed import EmbedBatch, merged
from farebox.gateway.cache_hits import CacheHits
from farebox.gateway.call import (
    Call,
    native_body,
    new_request_id,
    replace,
    served_natively,
    upstream_body,
)
from farebox.gateway.counting import Counted, TokenCounting
from farebox.gateway.failover import Failover, timeout
from farebox.gateway.guardrails import GuardrailStage, blocked_entry
from farebox.gateway.ledger import LedgerWriter
from farebox.gateway.metering import Metering
from farebox.gateway.policy import apply_policy
from farebox.gateway.rate_limits import RateLimits, limit_json
from farebox.gateway.refusals import NotingAdmitter, Refused
from farebox.gateway.relay import StreamRelay
from farebox.gateway.render import Reply, StreamReply, render_body, render_native
from farebox.gateway.sizes import (
    check_choices_fit,
    check_dimensions,
    check_output_cap,
    clamp_output,
    output_cap,
)
from farebox.identity.credentials import ProviderKeys
from farebox.providers.base import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Provider,
    native_responses,
)
from farebox.providers.capabilities import honouring

if TYPE_CHECKING:  # tracing is optional (``farebox[otel]``): only its types are named here
    from farebox.observe.traces_provider import Tracing
    from farebox.observe.traces_request import RequestTrace

# the edge (``farebox.api``) imports what a request returns from here
__all__ = ["Counted", "Gateway", "Reply", "StreamReply", "new_request_id"]
# the ledger's ``endpoint`` of a chat request, by the format its client speaks
CHAT_ENDPOINTS = {"anthropic": "messages", "completions": "completions", "responses": "responses"}
# the GenAI conventions' ``gen_ai.operation.name`` of a chat request, by its client's format
OPERATIONS = {"completions": "text_completion", "embeddings": "embeddings"}


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
        observe: Callable[[LedgerEntry, str], None] | None = None,
        tracing: Tracing | None = None,
        cache: ResponseCache | None = None,
        refused: Refused | None = None,  # told of refusals for want of money (upsell)
        keys: ProviderKeys | None = None,  # issue 14: provider keys from the vault, BYOK
        guardrails: GuardrailStage | None = None,  # issue 15: its engines, made at start-up
    ) -> None:
        self._router = router
        self._plans = plans
        self._providers = providers
        self._ledger = ledger
        self._limits = limits
        self._breakers = breakers
        self._default_plan = default_plan
        self._clock = clock
        self._tracing = tracing  # None when tracing is off: one attribute check per request
        # the stages, made once: a request passes through them, it does not make them
        self._admission = NotingAdmitter(budgets, limits, router, clock)
        self._admission.refused = refused
        self._metering = Metering(ledger, budgets, clock, observe)
        self._failover = Failover(routing or RoutingSettings(), breakers, self._metering, keys)
        self._relay = StreamRelay(providers, self._failover, self._metering, cache)
        # the response cache (None: no plan may cache); the admin face reads its store
        self.cache = cache
        self._hits = CacheHits(self._metering, budgets, limits, clock, refused)
        self.guardrails = guardrails or GuardrailStage()
        self._counting = TokenCounting(self._targets, providers, limits, budgets, clock, keys,
                                       self.guardrails)  # fmt: skip

    # plans and models ----------------------------------------------------------
    def plan_name(self, tenant: Tenant) -> str:
        return tenant.plan if tenant.plan in self._plans else self._default_plan

    def plan_of(self, tenant: Tenant) -> Plan:
        """The plan ``tenant`` is on (the default plan when its own is gone)."""
        return self._plans[self.plan_name(tenant)]

    def plan_for(self, principal: Principal) -> Plan:
        return self.plan_named(principal.tenant.plan)

    def plan_named(self, name: str) -> Plan:
        """The plan of that name now (the default plan for a name no longer configured)."""
        plan = self._plans.get(name)
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

    def plans(self) -> Mapping[str, Plan]:
        return self._plans

    def reload_plans(self, plans: Mapping[str, Plan], default_plan: str) -> None:
        self._plans = plans
        self._default_plan = default_plan

    def limits_for(self, principal: Principal) -> list[dict[str, Any]]:
        """The rate limits in force for this principal, as /v1/me shows them."""
        ws = principal.workspace_scope()
        return self.limits(self.plan_for(principal).name, principal.tenant, principal.key,
                           ws if isinstance(ws, Workspace) else None)  # fmt: skip

    def limits(
        self, plan: str, tenant: Tenant | None = None, key: ApiKey | None = None,
        workspace: Workspace | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """A plan's rate limits with a tenant's, a workspace's and a key's overrides applied."""
        if self._limits is None:
            return []
        specs = self._limits.specs(
            plan,
            tenant.rate_limits if tenant else (),
            key.rate_limits if key else (),
            workspace.rate_limits if workspace else (),
        )
        return [limit_json(s) for s in specs]

    def deployments(self) -> list[dict[str, Any]]:
        """Every deployment of every model, with its breaker state and call counts."""
        return deployment_rows(self._router, self._breakers.snapshot() if self._breakers else [])

    # targets -------------------------------------------------------------------------
    def _targets(self, plan: Plan, model: str, kinds: tuple[str, ...]) -> tuple[Target, ...]:
        """The model's deployments that serve this endpoint, in weighted order, if the plan
        allows the model."""
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

    def _provider_kind(self, target: Target) -> str:
        """The kind of the provider behind ``target`` (what it can honour of a request:
        ``providers.capabilities``)."""
        provider = self._providers.get(target.provider)
        return provider.kind if provider is not None else ""

    def _natives(self, targets: tuple[Target, ...], refusal: InvalidRequest) -> tuple[Target, ...]:
        """The ``targets`` served Responses natively; ``refusal`` when there are none."""
        providers = self._providers
        kept = tuple(t for t in targets if native_responses(providers[t.provider]) is not None)
        if not kept:
            raise refusal
        return kept

    # chat ------------------------------------------------------------------------
    async def chat(
        self,
        principal: Principal,
        body: dict[str, Any],
        request_id: str,
        flavor: str = "openai",
        echo: dict[str, Any] | None = None,
        responses: dict[str, Any] | None = None,
        native_only: InvalidRequest | None = None,
    ) -> Reply | StreamReply:
        """A chat request in OpenAI shape; ``flavor`` is the format the client gets back
        (``echo``: what a Responses object repeats of the client's request; ``responses``: the
        Responses request itself, sent as it is to native deployments; ``native_only``: what
        the Responses request asks that only those can give, refused if the model has none)."""
        plan = self.plan_for(principal)
        model = body["model"]
        trace = None if self._tracing is None else self._trace(flavor, body, plan, request_id)
        if trace is None:
            targets, input_tokens = self._prepare(plan, body, flavor, native_only)
        else:
            with trace.stage("route"):
                targets, input_tokens = self._prepare(plan, body, flavor, native_only)
        endpoint = CHAT_ENDPOINTS.get(flavor, "chat.completions")
        call = Call(principal, plan, endpoint, model, request_id, body, self._clock())
        call.flavor, call.echo, call.responses, call.trace = flavor, echo, responses, trace
        self._ledger.ensure_available()
        if plan.guardrails.enabled:  # before the cache, admission and routing
            await self._screen(call, self.guardrails.screen(call, input_tokens, targets))
        if self.cache is not None and plan.cache.enabled and _cacheable(call):
            hit = await self._cached(self.cache, call, targets)
            if hit is not None:
                return hit
        if trace is None:
            admitted = await self._admission.admit(call, targets, input_tokens)
        else:
            with trace.stage("admit"):
                admitted = await self._admission.admit(call, targets, input_tokens)
        if admitted is not targets and call.cache is not None:
            call.cache.store = False  # downgraded: not the model the key names
        targets = admitted
        async with self._metering.owned(call, targets):
            check_choices_fit(body, call.admission.max_tokens if call.admission else None)
            if body.get("stream"):
                return await self._relay.open(call, targets)
            return await self._chat_once(call, targets)

    async def _screen(self, call: Call, screening: Awaitable[None]) -> None:
        """The guardrail stage (``screening``: the stage's work on ``call``, a chat or an
        embeddings request); a block writes the request's one ``blocked`` ledger entry
        (unbilled, through the observers) before its 400 goes out. Nothing is held yet."""
        try:
            if call.trace is None:
                await screening
            else:
                with call.trace.stage("guardrails"):
                    await screening
        except GuardrailBlocked as exc:
            await self._metering.settle_logged(call, blocked_entry(call, exc, self._clock()))
            raise

    async def _cached(
        self, cache: ResponseCache, call: Call, targets: tuple[Target, ...]
    ) -> Reply | StreamReply | None:
        """The response cache's stage: the hit's reply, or None (a miss: ``call.cache``
        says what to store once it is served)."""
        if call.trace is None:
            ticket = await cache.lookup(call)
        else:
            with call.trace.stage("cache"):
                ticket = await cache.lookup(call)
        call.cache = ticket
        if ticket.answer is None:
            return None
        return await self._hits.chat(call, targets, ticket)

    def _prepare(
        self, plan: Plan, body: dict[str, Any], flavor: str, native_only: InvalidRequest | None
    ) -> tuple[tuple[Target, ...], int]:
        """Route and screen a chat request: the deployments that may serve it, and its input
        tokens, once the plan's policy and the deployments' output caps are applied."""
        model = body["model"]
        targets = self._targets(plan, model, ("chat", "reasoning"))
        targets = honouring(targets, body, self._provider_kind, flavor, model)
        if native_only is not None:
            targets = self._natives(targets, native_only)
        input_tokens = estimate_messages(body.get("messages"))
        cap = output_cap(targets)
        check_output_cap(body, cap, flavor)
        apply_policy(plan, body, input_tokens)
        clamp_output(body, cap)
        return targets, input_tokens

    def _trace(
        self, flavor: str, body: Mapping[str, Any], plan: Plan, request_id: str
    ) -> RequestTrace | None:
        """The request's spans (tracing is on): its operation is the GenAI conventions'
        ``gen_ai.operation.name``."""
        assert self._tracing is not None
        operation = OPERATIONS.get(flavor, "chat")
        return self._tracing.request(operation, body, plan.name, request_id, self._provider_kind)

    async def _chat_once(self, call: Call, targets: tuple[Target, ...]) -> Reply:
        """One answer; a Responses request goes as it is to a native deployment, translated
        to any other (failover may cross between the two)."""
        providers = self._providers

        async def attempt(target: Target) -> ChatResult:
            wait = timeout(call.plan, target)
            if (native := served_natively(call, providers, target)) is not None:
                native_request = ChatRequest(
                    native_body(call, target, False),
                    wait,
                    call.upstream_headers,
                    call.principal,
                    call.api_key,
                )
                return await native.responses(native_request)
            body = upstream_body(call, target, False)
            return await providers[target.provider].chat(
                ChatRequest(body, wait, call.upstream_headers, call.principal, call.api_key)
            )

        metering = self._metering
        target, result = await self._failover.run(call, targets, attempt)
        native = served_natively(call, providers, target) is not None
        answer = result.body
        if call.guard is not None and call.guard.answer is not None:  # scanned before entry
            guard = call.guard.answer
            answer = guard.native_body(answer) if native else guard.chat_body(answer)
        served = metering.entry(call, target, result.usage, "ok", 200, result.upstream_ms)
        await metering.settle(call, served)
        if native:
            body = render_native(answer, call.request_id, served, call.echo)
        else:
            body = render_body(call.flavor, answer, call.request_id, served, call.echo)
            if call.cache is not None and self.cache is not None:  # an OpenAI body is stored
                encoded = body if call.flavor == "openai" else None
                self.cache.keep(call.cache, result.body, served, call, encoded)
        return Reply(body, metering.headers(call, target, served))

    # token counting (no budget, no ledger) ------------------------------------------
    async def count_tokens(
        self,
        principal: Principal,
        body: dict[str, Any],
        flavor: str = "openai",
        request_id: str = "",
    ) -> Counted:
        """The input tokens of an Anthropic Messages (``flavor`` ``anthropic``) or a Responses
        request, under the plan's model access and request limits (``gateway.counting``)."""
        plan = self.plan_for(principal)
        if flavor == "anthropic":
            return await self._counting.anthropic(principal, plan, body, request_id)
        return await self._counting.responses(principal, plan, body, request_id)

    # embeddings ----------------------------------------------------------------------
    async def embed(self, principal: Principal, body: dict[str, Any], request_id: str) -> Reply:
        plan = self.plan_for(principal)
        model = body["model"]
        trace = None if self._tracing is None else self._trace("embeddings", body, plan, request_id)
        if trace is None:
            targets = self._embedding_targets(plan, body)
        else:
            with trace.stage("route"):
                targets = self._embedding_targets(plan, body)
        call = Call(principal, plan, "embeddings", model, request_id, body, self._clock())
        call.trace = trace
        self._ledger.ensure_available()
        if plan.guardrails.enabled:  # before the cache and admission: they see the redacted input
            await self._screen(call, self.guardrails.screen_embed(call))
        batch = None
        if self.cache is not None and plan.cache.enabled:
            batch = await self.cache.lookup_items(call)
            call.cache = batch.ticket if batch is not None else None
            if batch is not None and batch.complete:
                return await self._hits.embed(call, targets, batch)
            if batch is not None and batch.hits:  # only the unknown items go upstream
                body = call.body = batch.upstream_body(body)
        input_tokens = estimate_input(body.get("input"))
        if trace is None:
            admitted = await self._admission.admit(call, targets, input_tokens, output=False)
        else:
            with trace.stage("admit"):
                admitted = await self._admission.admit(call, targets, input_tokens, output=False)
        if admitted is not targets and batch is not None:
            batch.ticket.store = False
        targets = admitted

        async def attempt(target: Target) -> EmbedResult:
            upstream = {**body, "model": target.model}
            return await self._providers[target.provider].embed(
                EmbedRequest(
                    upstream,
                    timeout(plan, target),
                    call.upstream_headers,
                    call.principal,
                    call.api_key,
                )
            )

        metering = self._metering
        async with metering.owned(call, targets):
            target, result = await self._failover.run(call, targets, attempt)
            served = metering.entry(call, target, result.usage, "ok", 200, result.upstream_ms)
            if batch is None:
                await metering.settle(call, served)
                return Reply(orjson.dumps(result.body), metering.headers(call, target, served))
            return await self._embedded(call, target, batch, result, served)

    async def _embedded(
        self, call: Call, target: Target, batch: EmbedBatch, result: EmbedResult,
        upstream: LedgerEntry,
    ) -> Reply:  # fmt: skip
        """An embeddings answer with the cache on: the cached items merged in (a partial hit
        records their original cost as ``saved``, and their revenue at the ``hit_price``);
        the new items stored behind the reply."""
        served, body = upstream, result.body
        if batch.hits:
            if not batch.answered_by(result.body):  # the upstream's call is billed as it is
                await self._metering.settle(call, upstream)
                raise UpstreamError(
                    f"The upstream answered {batch.upstream_count(result.body)} embeddings for "
                    f"{len(batch.missing)} inputs; the call was recorded in the ledger."
                )
            revenue = upstream.revenue + batch.hit_revenue
            served = replace(upstream, saved=batch.saved, revenue=revenue)
            body = merged(batch, result.body)
        await self._metering.settle(call, served)
        headers = self._metering.headers(call, target, served)
        headers["x-farebox-cache-items-hit"] = str(batch.hits)
        if self.cache is not None:
            self.cache.keep_items(batch, result.body, upstream)
        return Reply(orjson.dumps(body), headers)

    def _embedding_targets(self, plan: Plan, body: dict[str, Any]) -> tuple[Target, ...]:
        targets = self._targets(plan, body["model"], ("embedding",))
        check_dimensions(body, targets)
        return targets


def _cacheable(call: Call) -> bool:
    """Whether the response cache may see ``call``: not when the guardrails rewrite its
    answer (placeholders restored, the answer's PII scanned), which a hit would skip."""
    return call.guard is None or call.guard.answer is None
