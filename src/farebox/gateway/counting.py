"""Token counting (``/v1/messages/count_tokens``, ``/v1/responses/input_tokens``): a ledger-free
path through the same tenancy and plan policy as chat.

A count is authenticated (before, at the edge), checked against the plan's model access and
its requests-per-minute limits, then answered by the provider's own counting endpoint when the
model's first deployment has one (Anthropic), else by the estimator that sizes reservations.
Nothing is billed, nothing is reserved against a budget, no ledger entry is written: the rate
limit check reads the request counters without taking from them (a count is refused when the
plan's requests are used up, and is not itself counted, since the stores settle counters only
with a ledger entry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from farebox.core.counting import estimate_chat_input, estimate_response_input
from farebox.core.plans import Plan
from farebox.core.routing import Target
from farebox.errors import UpstreamError
from farebox.gateway.admission import Budgets
from farebox.gateway.auth import Principal
from farebox.gateway.budget_scope import Scope
from farebox.gateway.call import openai_user
from farebox.gateway.failover import timeout
from farebox.gateway.rate_limits import RateLimits, refusal
from farebox.gateway.rate_limits import headers as limit_headers
from farebox.providers.base import Provider
from farebox.providers.translate_reverse import anthropic_request_to_openai

log = logging.getLogger("farebox.pipeline")
CHAT_KINDS = ("chat", "reasoning")
# Messages fields the counting endpoint has no use for (Anthropic refuses some of them there)
NOT_COUNTED = frozenset(
    {
        "max_tokens",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "service_tier",
    }
)
Targets = Callable[[Plan, str, tuple[str, ...]], tuple[Target, ...]]


@dataclass(frozen=True, slots=True)
class Counted:
    """A count and the headers it is answered with."""

    input_tokens: int
    headers: dict[str, str]


class TokenCounting:
    """Counts input tokens for the counting endpoints; made once, by the ``Gateway``."""

    __slots__ = ("_budgets", "_clock", "_limits", "_providers", "_targets")

    def __init__(
        self,
        targets: Targets,
        providers: Mapping[str, Provider],
        limits: RateLimits | None,
        budgets: Budgets | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._targets = targets
        self._providers = providers
        self._limits = limits
        self._budgets = budgets
        self._clock = clock

    async def anthropic(self, principal: Principal, plan: Plan, body: dict[str, Any]) -> Counted:
        """An Anthropic Messages request (``model``, ``messages``, ``system``, ``tools``)."""
        chat = anthropic_request_to_openai(body)
        user = principal.user or openai_user(chat)
        target, headers = await self._admit(principal, plan, body["model"], user)
        provider = self._providers[target.provider]
        counter = getattr(provider, "count_tokens", None)
        if provider.kind == "anthropic" and counter is not None:
            upstream = {k: v for k, v in body.items() if k not in NOT_COUNTED}
            upstream["model"] = target.model
            try:
                tokens = await counter(upstream, timeout(plan, target))
                return Counted(tokens, {**headers, "x-farebox-count-source": "provider"})
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                log.warning("count_tokens on %s failed (%s); estimated", target.provider, exc)
        tokens = estimate_chat_input(chat.get("messages"), chat.get("tools"))
        return Counted(tokens, {**headers, "x-farebox-count-source": "estimate"})

    async def responses(self, principal: Principal, plan: Plan, body: dict[str, Any]) -> Counted:
        """A Responses API request (``model``, ``input``, ``instructions``, ``tools``), counted
        with the estimator (no deployment forwards it yet)."""
        model, user = body.get("model"), principal.user or openai_user(body)
        if model is not None:
            _, headers = await self._admit(principal, plan, model, user)
        else:  # no model to check access to: the limits on every model still apply
            headers = await self._check_requests(principal, plan, "", user)
        tokens = estimate_response_input(
            body.get("input"), body.get("instructions"), body.get("tools")
        )
        return Counted(tokens, {**headers, "x-farebox-count-source": "estimate"})

    async def _admit(
        self, principal: Principal, plan: Plan, model: str, user: str | None
    ) -> tuple[Target, dict[str, str]]:
        """The model's first deployment, if the plan allows the model and its request
        limits have room; the headers that say so."""
        target = self._targets(plan, model, CHAT_KINDS)[0]
        headers = {"x-farebox-model": target.model}
        headers.update(await self._check_requests(principal, plan, model, user))
        return target, headers

    async def _check_requests(
        self, principal: Principal, plan: Plan, model: str, user: str | None
    ) -> dict[str, str]:
        """Refuse (429) when a requests-per-minute limit in scope is used up; else the
        ``x-ratelimit-*`` headers. Reads the counters, takes nothing from them."""
        if self._limits is None or self._budgets is None:
            return {}
        who, now = principal, self._clock()
        scope = Scope.of(who.tenant, who.key, plan.name, who.feature, user)
        holds = self._limits.holds(scope.plan, who.tenant.rate_limits, who.key.rate_limits,
                                   tenant=scope.tenant, key=scope.key, user=scope.user,
                                   ip=who.client_ip, model=model, now=now,
                                   shared_key=scope.shared_key)  # fmt: skip
        requests = [h for h in holds if h.unit == "requests"]
        if not requests:
            return {}
        states = await self._budgets.counter_states(requests)
        full = next((s for s in states if s.remaining < 1), None)
        if full is not None:
            raise refusal(full, states, self._clock())
        return limit_headers(states, now)
