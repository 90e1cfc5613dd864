"""A cache hit, served: no provider call and no budget held, but a request like any other
for the rate limits, and a ledger entry like any other.

A hit takes one request of the requests-per-minute limits in scope and a slot of the
concurrency limits (``counting.COUNTED_UNITS``: no tokens, no model read anything), in a
reservation of nothing that its own ledger entry settles (``Metering.settle``, inside
``Metering.owned``, so a hit that fails or is cancelled still ends it). A full limit is the
usual 429. The entry: status ``cache_hit``, cost 0, ``saved`` what the original cost, revenue
the plan's ``hit_price`` share of the original's, no tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from farebox.core.budgets import Hold
from farebox.core.cache import HIT_STATUS, MISS
from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry
from farebox.core.routing import Target
from farebox.errors import BudgetExceeded, InsufficientCredits
from farebox.gateway.admission import Admission, Budgets, scope_of
from farebox.gateway.budget_scope import Scope
from farebox.gateway.cache_embed import EmbedBatch, hit_embeddings
from farebox.gateway.cache_replay import completion_for, hit_body, replay, shown_entry
from farebox.gateway.call import Call, cache_status, call_entry, placeholder
from farebox.gateway.counting import COUNTED_UNITS
from farebox.gateway.metering import UNLIMITED, Metering
from farebox.gateway.rate_limits import RateLimits
from farebox.gateway.rate_limits import headers as limit_headers
from farebox.gateway.refusals import Refused
from farebox.gateway.render import Reply, StreamReply
from farebox.gateway.revenue_holds import Revenue

if TYPE_CHECKING:
    from farebox.gateway.cache import CacheTicket

log = logging.getLogger("farebox.cache")


class CacheHits:
    """Serves hits; made once, by the ``Gateway``."""

    __slots__ = ("_budgets", "_clock", "_limits", "_metering", "_refused")

    def __init__(
        self,
        metering: Metering,
        budgets: Budgets | None,
        limits: RateLimits | None,
        clock: Callable[[], float] = time.time,
        refused: Refused | None = None,
    ) -> None:
        self._metering = metering
        self._budgets = budgets
        self._limits = limits
        self._clock = clock
        self._refused = refused  # told of refusals for want of money (upsell moments)

    async def chat(
        self, call: Call, targets: tuple[Target, ...], ticket: CacheTicket
    ) -> Reply | StreamReply | None:
        """A chat hit, whole or replayed as a stream, in the client's format; None when the
        cached answer cannot be read (it is then a miss)."""
        answer = ticket.answer
        assert answer is not None
        try:
            completion = completion_for(answer.body, call.request_id, self._clock())
        except (orjson.JSONDecodeError, TypeError):
            log.warning("request %s: a cached answer could not be read", call.request_id)
            ticket.answer, ticket.similarity, ticket.status = None, None, MISS
            return None
        revenue = ticket.policy.hit_price.revenue(answer.revenue)
        model, provider = answer.model_served, answer.provider
        # the reply is made before the hit is billed: a body that cannot be rendered is never
        # a billed hit (the draft's money is the entry's: cost 0, this revenue)
        draft = hit_entry(call, model, provider, revenue, answer.cost, self._clock())
        chunks, body = None, b""
        if call.body.get("stream"):
            shown = shown_entry(draft, completion)
            chunks = replay(call.flavor, call.body, completion, call.request_id, shown, call.echo)
        elif call.flavor == "openai":  # the body carries its usage: no entry to show it from
            body = hit_body("openai", completion, call.request_id, draft, None)
        else:
            shown = shown_entry(draft, completion)
            body = hit_body(call.flavor, completion, call.request_id, shown, call.echo)
        scope = scope_of(call)
        await self._serve(call, scope, targets, model, provider, revenue, answer.cost)
        headers = await self._headers(call, scope, model, ticket)
        return StreamReply(headers, chunks) if chunks is not None else Reply(body, headers)

    async def embed(self, call: Call, targets: tuple[Target, ...], batch: EmbedBatch) -> Reply:
        """An embeddings request whose every input item is cached."""
        found = [a for a in batch.answers if a is not None]
        revenue = batch.ticket.policy.hit_price.revenue(sum(a.revenue for a in found))
        first, scope = found[0], scope_of(call)
        await self._serve(call, scope, targets, first.model_served, first.provider, revenue,
                          sum(a.cost for a in found))  # fmt: skip
        headers = await self._headers(call, scope, first.model_served, batch.ticket)
        headers["x-farebox-cache-items-hit"] = str(len(found))
        return Reply(orjson.dumps(hit_embeddings(batch)), headers)

    async def _serve(self, call: Call, scope: Scope, targets: tuple[Target, ...], model: str,
                     provider: str, revenue: int, saved: int) -> LedgerEntry:  # fmt: skip
        """Count the hit against the rate limits and write its entry (which settles them)."""
        async with self._metering.owned(call, targets):
            await self._admit(call, scope, targets[0], revenue)
            record = hit_entry(call, model, provider, revenue, saved, self._clock())
            await self._metering.settle(call, record)
        return record

    async def _admit(self, call: Call, scope: Scope, target: Target, revenue: int) -> None:
        """One request and a concurrency slot of the rate limits in scope (429 when full),
        and for a prepaid tenant the hit's revenue against its credit balance."""
        budgets = self._budgets
        holds = self._holds(call, scope) if budgets is not None else []
        if budgets is None:
            return
        terms = call.plan.credits
        # a hit costs nothing, but what it charges counts against revenue budgets and credits
        charged = [h for h in budgets.scopes.holds(scope, self._clock()) if h.unit == "revenue"] \
            if revenue and budgets.scopes.enabled(scope) else []  # fmt: skip
        if revenue and terms is not None and budgets.credits is not None:
            charged = [*charged, *await budgets.credits.holds(scope.tenant)]
        if not holds and not charged:
            return

        def unsettled(rid: str, amount: int) -> LedgerEntry:
            return placeholder(call, target, rid, amount)

        price = Revenue(lambda _cost, _out: revenue, terms)  # a hit's revenue is known
        result = await budgets.admit(scope, charged, [target.price], 0, 0, unsettled, holds, price)
        if not isinstance(result, Admission):
            if self._refused is not None and isinstance(
                result, BudgetExceeded | InsufficientCredits
            ):
                self._refused(call.principal.tenant.id, call.plan.name, result)
            raise result
        call.admission = result

    def _holds(self, call: Call, scope: Scope) -> list[Hold]:
        if self._limits is None:
            return []
        holds = self._limits.request_holds(scope, call.principal, call.model, self._clock())
        return [h for h in holds if h.unit in COUNTED_UNITS]

    async def _headers(
        self, call: Call, scope: Scope, model: str, ticket: CacheTicket
    ) -> dict[str, str]:
        headers = {"x-farebox-request-id": call.request_id, "x-farebox-model": model}
        admission = call.admission
        if admission is not None and admission.limited:
            headers.update(limit_headers(admission.states, self._clock()))
        headers["x-farebox-cost-usd"] = format_usd(0)
        try:  # the hit is billed already: a budget read that fails leaves the header out
            headers["x-farebox-budget-remaining-usd"] = await self._remaining(scope)
        except Exception as exc:
            log.warning("request %s: budget read after a hit failed: %r", call.request_id, exc)
        headers.update(ticket.headers())
        if call.guard is not None and call.guard.skipped:  # parts no guardrail could read
            headers["x-farebox-guardrails-skipped"] = call.guard.skipped
        return headers

    async def _remaining(self, scope: Scope) -> str:
        """The tightest budget's remaining (the hit took nothing from it)."""
        budgets = self._budgets
        if budgets is None or not budgets.scopes.enabled(scope):
            return UNLIMITED
        money = [s.remaining for s in await budgets.states(scope) if s.hold.unit == "usd"]
        return format_usd(min(money)) if money else UNLIMITED


def hit_entry(call: Call, model: str, provider: str, revenue: int, saved: int,
              finished_at: float, **extra: Any) -> LedgerEntry:  # fmt: skip
    """A hit's ledger entry: no tokens, cost 0, ``saved`` and ``revenue`` as given."""
    return call_entry(
        call, model, provider, HIT_STATUS, 200, finished_at,
        metadata=call.principal.metadata, revenue=revenue,
        latency_ms=(time.perf_counter() - call.started) * 1000,
        reservation_id=call.reservation_id, cache=cache_status(call), saved=saved, **extra,
    )  # fmt: skip
