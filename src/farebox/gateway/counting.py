"""Token counting (``/v1/messages/count_tokens``, ``/v1/responses/input_tokens``): a ledger-free
path through the same tenancy and plan policy as chat.

A count is authenticated (before, at the edge), checked against the plan's model access, and
takes one request of the requests-per-minute limits in scope, and a slot of the concurrency
limits while it runs, exactly as a request does (429 when one is full). It is then answered by
the provider's own counting endpoint when the model's first deployment has one (Anthropic),
else by the estimator that sizes reservations. Nothing is billed, nothing is held against a
budget, no ledger entry is written: the rate-limit holds are a ledger-free reservation
(``Budgets.counting``), settled without a ledger entry however the count ends.

Guardrails (issue 15): a count answered by the estimator sends nothing anywhere, and is not
screened. One sent to the provider's counting endpoint is, when the plan has guardrails on,
for secrets and PII only (``GuardrailStage.screen_count``): a ``block`` refuses it with the
400 chat would give; a value ``redact`` would replace (or a text past ``max_scan_chars``)
keeps it local, counted by the estimator; ``flag`` sends it as it is. Since a count writes no
ledger entry, its findings are not recorded. What is screened is what is sent: the body's
chat form, which is what a ``/v1/messages`` request sends the provider, as the provider gets
it (``openai_request_to_anthropic``, as ``AnthropicProvider.chat`` sends it). What the chat
form drops (``thinking`` and ``redacted_thinking`` blocks, images in tool results, fields
Farebox does not translate), the messages path never sends either, so the count does not
hold it: nothing the checks did not read reaches the counting endpoint, and the count is the
one of the request this gateway would send. Without guardrails, the body is sent as given.

Tokens-per-minute limits are not charged: they count the tokens a model reads and writes, and
a count makes no model read anything (the provider's counting endpoint is free and has limits
of its own).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from farebox.core.budgets import Hold
from farebox.core.counting import estimate_chat_input, estimate_response_input
from farebox.core.guardrails import GuardrailPolicy
from farebox.core.plans import Plan
from farebox.core.records import LEDGER_FREE, LedgerEntry
from farebox.core.routing import Target
from farebox.errors import UpstreamError
from farebox.gateway.admission import Budgets
from farebox.gateway.auth import Principal
from farebox.gateway.budget_scope import Scope
from farebox.gateway.call import openai_user
from farebox.gateway.failover import timeout
from farebox.gateway.rate_limits import RateLimits
from farebox.gateway.rate_limits import headers as limit_headers
from farebox.identity.credentials import ProviderKeys
from farebox.providers.base import Provider
from farebox.providers.translate import openai_request_to_anthropic
from farebox.providers.translate_reverse import anthropic_request_to_openai

log = logging.getLogger("farebox.pipeline")
CHAT_KINDS = ("chat", "reasoning")
COUNTED_UNITS = ("requests", "concurrent")  # a count's model tokens: none (see above)
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


class CountScreen(Protocol):
    """The guardrail stage's screening of a count (``GuardrailStage.screen_count``)."""

    async def screen_count(self, policy: GuardrailPolicy, body: dict[str, Any]) -> bool: ...


@dataclass(frozen=True, slots=True)
class Counted:
    """A count and the headers it is answered with."""

    input_tokens: int
    headers: dict[str, str]


class TokenCounting:
    """Counts input tokens for the counting endpoints; made once, by the ``Gateway``."""

    __slots__ = ("_budgets", "_clock", "_guard", "_keys", "_limits", "_providers", "_targets")

    def __init__(
        self,
        targets: Targets,
        providers: Mapping[str, Provider],
        limits: RateLimits | None,
        budgets: Budgets | None,
        clock: Callable[[], float] = time.time,
        keys: ProviderKeys | None = None,  # issue 14: the vault's key, or the tenant's own
        guard: CountScreen | None = None,  # issue 15: what screens a count sent upstream
    ) -> None:
        self._guard = guard
        self._keys = keys
        self._targets = targets
        self._providers = providers
        self._limits = limits
        self._budgets = budgets
        self._clock = clock

    async def anthropic(
        self, principal: Principal, plan: Plan, body: dict[str, Any], request_id: str = ""
    ) -> Counted:
        """An Anthropic Messages request (``model``, ``messages``, ``system``, ``tools``)."""
        chat = anthropic_request_to_openai(body)
        model, user = body["model"], principal.user or openai_user(chat)
        target = self._targets(plan, model, CHAT_KINDS)[0]
        what = Counting(
            principal, plan, model, user, "messages.count_tokens", request_id, self._clock()
        )
        async with self._request(what) as headers:
            headers["x-farebox-model"] = target.model
            tokens = await self._provider_count(plan, target, body, principal.tenant.id, chat)
            source = "provider"
            if tokens is None:
                tokens = estimate_chat_input(chat.get("messages"), chat.get("tools"))
                source = "estimate"
        return Counted(tokens, {**headers, "x-farebox-count-source": source})

    async def _provider_count(
        self, plan: Plan, target: Target, body: dict[str, Any], tenant_id: str,
        chat: dict[str, Any],
    ) -> int | None:  # fmt: skip
        """The Anthropic deployment's own count; None when the deployment has no counting
        endpoint, when the guardrails keep the body (``chat``: in chat shape) from it, or when
        it failed in a way worth estimating over (retryable). Under guardrails, what is sent
        is ``chat`` as the provider would get it from chat (the texts screened, nothing
        else); else ``body`` as given."""
        provider = self._providers[target.provider]
        counter = getattr(provider, "count_tokens", None)
        if provider.kind != "anthropic" or counter is None:
            return None
        sent = body
        if plan.guardrails.enabled and self._guard is not None:
            if not await self._guard.screen_count(plan.guardrails, chat):
                return None
            sent = openai_request_to_anthropic(chat)  # what was screened, and only that
            if not all(_said(m) for m in sent.get("messages") or ()):
                return None  # a turn of thinking blocks only: empty once they are dropped
        upstream = {k: v for k, v in sent.items() if k not in NOT_COUNTED}
        upstream["model"] = target.model
        try:
            api_key = None
            if self._keys is not None:  # issue 14: the vault's key, or the tenant's own
                api_key, _ = await self._keys.key(tenant_id, target.provider)
            if api_key is None:
                return int(await counter(upstream, timeout(plan, target)))
            return int(await counter(upstream, timeout(plan, target), api_key=api_key))
        except UpstreamError as exc:
            if not exc.retryable:
                raise
            log.warning("count_tokens on %s failed (%s); estimated", target.provider, exc)
            return None

    async def responses(
        self, principal: Principal, plan: Plan, body: dict[str, Any], request_id: str = ""
    ) -> Counted:
        """A Responses API request (``model``, ``input``, ``instructions``, ``tools``; the
        history of a ``previous_response_id`` already before its input), counted with the
        estimator (no deployment forwards it yet)."""
        model, user = body.get("model"), principal.user or openai_user(body)
        headers: dict[str, str] = {}
        if model is not None:  # else no model to check access to: every model's limits apply
            headers["x-farebox-model"] = self._targets(plan, model, CHAT_KINDS)[0].model
        what = Counting(principal, plan, model or "", user, "responses.input_tokens", request_id,
                        self._clock())  # fmt: skip
        async with self._request(what) as limits:
            tokens = estimate_response_input(
                body.get("input"), body.get("instructions"), body.get("tools")
            )
        return Counted(tokens, {**headers, **limits, "x-farebox-count-source": "estimate"})

    @contextlib.asynccontextmanager
    async def _request(self, what: Counting) -> AsyncIterator[dict[str, str]]:
        """One request of the requests-per-minute limits in scope, and a slot of the
        concurrency limits while the block runs (429 when one is full), with no budget and
        no ledger entry; yields the ``x-ratelimit-*`` headers (the block may add more)."""
        holds = self._holds(what)
        if not holds or self._budgets is None:
            yield {}
            return
        async with self._budgets.counting(holds, what.placeholder) as states:
            yield limit_headers(states, self._clock())

    def _holds(self, what: Counting) -> list[Hold]:
        """The request and concurrency counters a count takes (not the token ones)."""
        if self._limits is None:
            return []
        who = what.principal
        scope = Scope.of(who.tenant, who.key, what.plan.name, who.feature, what.user,
                         who.workspace_scope())  # fmt: skip
        holds = self._limits.request_holds(scope, who, what.model, what.at)
        return [h for h in holds if h.unit in COUNTED_UNITS]


@dataclass(frozen=True, slots=True)
class Counting:
    """Who counts what: the scope of the rate limits a count takes, and its placeholder."""

    principal: Principal
    plan: Plan
    model: str
    user: str | None
    endpoint: str
    request_id: str
    at: float

    def placeholder(self, rid: str, amount: int) -> LedgerEntry:
        """The ledger-free reservation's entry: it settles the counters, and is never
        written to the ledger (``LEDGER_FREE``)."""
        who, now = self.principal, self.at
        return LedgerEntry(
            request_id=self.request_id or rid, tenant_id=who.tenant.id, key_id=who.key.id,
            endpoint=self.endpoint, model_requested=self.model, model_served=self.model,
            provider="", status=LEDGER_FREE, http_status=0, started_at=now, finished_at=now,
            user=self.user, feature=who.feature, reservation_id=rid, workspace=who.workspace_id,
        )  # fmt: skip


def _said(message: Any) -> bool:
    """Whether a message sent to Anthropic has content: Anthropic refuses an empty turn, which
    a turn holding only blocks the chat form drops (thinking, server tools) becomes."""
    content = message.get("content") if isinstance(message, dict) else None
    return bool(content) if isinstance(content, str | list) else content is not None
