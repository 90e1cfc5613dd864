"""The response cache, a stage of the request path: after routing, policy and output caps
(``Gateway._prepare``), before admission. A hit never reaches a provider and never reserves
budget (``cache_hits``); a miss goes the normal way, and its answer is stored once it was
served in full, in a background task that never delays the answer.

Every lookup stays inside its own partition (``partition_of``): the tenant, plus a namespace
made of the plan's ``partition`` (``k:<key id>`` or ``u:<user>``) and the client's
``X-Farebox-Cache-Namespace``, composed unambiguously (``core.cache.compose_namespace``). The
exact key is the hash of the partition, the client's format and the canonical request
(``core.cache.exact_key``), computed once, before admission lowers anything. A semantic
lookup (plans with ``mode: semantic``) follows an exact miss: the last user message is
embedded and compared with those cached in the same context.

The cache is never a reason for a failed request: a backend that fails (``CacheUnavailable``
or anything else) is logged (at most once per ``WARN_EVERY_S``), counted (``on_event``) and
treated as a miss (``bypass`` when the lookup could not run).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import orjson

from farebox.config.cache import CacheSettings
from farebox.core.cache import (
    BYPASS,
    HIT_EXACT,
    HIT_SEMANTIC,
    MISS,
    CacheAsk,
    CachedAnswer,
    CacheLimits,
    CachePolicy,
    Partition,
    answer_fields,
    compose_namespace,
    exact_key,
    last_user_text,
    semantic_context,
)
from farebox.core.cache_veto import vetoed
from farebox.core.records import LedgerEntry
from farebox.errors import CacheUnavailable
from farebox.gateway import cache_embed
from farebox.gateway.cache_capture import StreamCapture
from farebox.gateway.cache_embed import EmbedBatch
from farebox.gateway.cache_encoding import compact, encoded
from farebox.gateway.call import openai_user
from farebox.semantic.base import Embedder
from farebox.stores.base import CacheStore

if TYPE_CHECKING:  # the carrier names the ticket; the stage reads the carrier
    from farebox.gateway.call import Call

log = logging.getLogger("farebox.cache")
WARN_EVERY_S = 10.0  # a failing backend is logged at most this often
CLOSE_WAIT_S = 5.0  # how long ``close`` lets entries being stored finish
BACKOFF_S = 5.0  # how long a backend that failed is left alone before it is tried again
# the events ``on_event`` is told of: a backend failure, a semantic lookup skipped (the
# embedder's queue was full, or it failed), a semantic hit refused by the veto, an entry stored
EVENTS = ("error", "skipped", "vetoed", "stored")
EventSink = Callable[[str], None]


@dataclass(slots=True)
class CacheTicket:
    """One request's business with the cache: where it looks, what it found, what to store.

    ``status`` is its ``x-farebox-cache`` header and its ledger entry's ``cache``. ``cap``:
    the request's output cap before admission (an answer cut short by a cap that admission
    lowered is not stored). ``prompt``, ``context`` and ``vector``: the semantic cache's
    question, context and embedding (a miss indexes its answer with them)."""

    partition: Partition
    key: str
    scope: str
    policy: CachePolicy
    store: bool
    ttl_s: int
    cap: Any
    status: str = MISS
    answer: CachedAnswer | None = None
    similarity: float | None = None
    prompt: str = ""
    context: str | None = None
    vector: bytes | None = None

    def headers(self) -> dict[str, str]:
        """The reply's ``x-farebox-cache`` headers."""
        if self.similarity is None:
            return {"x-farebox-cache": self.status}
        return {
            "x-farebox-cache": self.status,
            "x-farebox-cache-similarity": f"{self.similarity:.4f}",
        }


class ResponseCache:
    """The cache stage of one app instance: lookups, and the entries being stored."""

    def __init__(
        self,
        store: CacheStore,
        settings: CacheSettings | None = None,
        *,
        embedder: Embedder | None = None,
        opener: Callable[[], Coroutine[Any, Any, None]] | None = None,
        clock: Callable[[], float] = time.time,
        on_event: EventSink | None = None,
    ) -> None:
        settings = settings or CacheSettings()
        self.store = store
        self.embedder = embedder
        self._opener = opener  # opens the backend (Redis) once the main store is open
        self._clock = clock
        self._on_event = on_event
        self.max_entry_bytes = settings.max_entry_bytes
        semantic = settings.semantic
        self._threshold = semantic.threshold
        self._veto = semantic.veto
        self._max_chars = semantic.max_chars
        self._wait_s = semantic.wait_ms / 1000
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_at = float("-inf")
        self._down_until = float("-inf")  # a failing backend is left alone until then

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the backend and load the embedder (``EmbedderUnavailable`` names the extra)."""
        if self._opener is not None:
            await self._opener()
        if self.embedder is not None:
            await self.embedder.start()

    async def close(self) -> None:
        """Let entries being stored finish (a short while), then close the embedder and the
        backend."""
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self.embedder is not None:
            await _quietly(self.embedder.close())
        await _quietly(self.store.close())

    async def settled(self) -> None:
        """Wait until every entry being stored now is stored (tests, shutdown)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # lookup --------------------------------------------------------------------------------
    async def lookup(self, call: Call) -> CacheTicket:
        """The request's ticket, with the answer found (``status`` hit-exact or hit-semantic)
        or not (``miss``; ``bypass`` when no lookup ran)."""
        policy, ask = call.plan.cache, call.principal.cache
        ttl = ttl_of(policy, ask)
        body = call.body
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        try:
            partition = partition_of(call)
            scope = scope_of(call)
            key = exact_key(partition, scope, body, encoded) if partition is not None else ""
        except Exception as exc:  # an unencodable body: nothing to look up or store
            self.failed(exc)
            partition = None
        if partition is None:  # no partition (no user to partition by): neither look nor keep
            return CacheTicket(Partition(""), "", "", policy, False, ttl, cap, BYPASS)
        ticket = CacheTicket(partition, key, scope, policy, ask.store and self.up, ttl, cap)
        if not ask.lookup or not self.up:
            ticket.status = BYPASS
            if policy.semantic and ask.store:
                self._question(ticket, body)  # its answer is indexed when stored
            return ticket
        now = self._clock()
        try:
            answer = await self.store.get(partition, key, now)
        except Exception as exc:
            self.failed(exc)
            ticket.status, ticket.store = BYPASS, self.up
            return ticket
        if answer is not None and answer.kind == "chat":
            ticket.answer, ticket.status = answer, HIT_EXACT
        elif policy.semantic and self.embedder is not None:
            await self._semantic(ticket, body, now)
        return ticket

    async def lookup_items(self, call: Call) -> EmbedBatch | None:
        """An embeddings request's items, each looked up (``cache_embed``); None when its
        input has nothing to key."""
        policy, ask = call.plan.cache, call.principal.cache
        ttl = ttl_of(policy, ask)
        try:
            partition = partition_of(call)
        except Exception as exc:
            self.failed(exc)
            return None
        if partition is None:
            return None
        ticket = CacheTicket(partition, "", "embeddings", policy, ask.store and self.up, ttl, None)
        if not ask.lookup or not self.up:
            ticket.status = BYPASS
        return await cache_embed.lookup_items(self, call, ticket)

    def keep_items(self, batch: EmbedBatch, result: Mapping[str, Any],
                   served: LedgerEntry) -> None:  # fmt: skip
        """Store an embeddings request's new items behind the reply."""
        if batch.ticket.store and batch.missing:
            self.spawn(cache_embed.keep_items(self, batch, result, served))

    def _question(self, ticket: CacheTicket, body: Mapping[str, Any]) -> str | None:
        """The last user message, if the semantic cache applies to this request (one choice,
        a temperature at most the plan's, a last user message of text, not too long); its
        context is set on ``ticket``."""
        choices = body.get("n")
        if isinstance(choices, int) and choices > 1:
            return None
        if not cool_enough(body.get("temperature"), ticket.policy):
            return None
        text = last_user_text(body)
        if text is None or len(text) > self._max_chars:
            return None
        ticket.context = semantic_context(ticket.partition, ticket.scope, body, encoded)
        ticket.prompt = text
        return text

    async def _semantic(self, ticket: CacheTicket, body: Mapping[str, Any], now: float) -> None:
        """The nearest cached question of the same context, if similar enough and not
        vetoed (numbers, dates, negation or names that differ)."""
        assert self.embedder is not None
        try:
            text = self._question(ticket, body)
            if text is None or ticket.context is None:
                return
            try:  # a lookup waits a bounded time: a slow embedder makes a miss, not a wait
                vector = await asyncio.wait_for(self.embedder.embed(text), self._wait_s)
            except TimeoutError:
                vector = None
            ticket.vector = vector
            if vector is None:
                self.event("skipped")
                return
            near = await self.store.nearest(ticket.partition, ticket.context, vector, now)
            if near is None or near.similarity < self._threshold:
                return
            if self._veto and vetoed(near.prompt, text) is not None:
                self.event("vetoed")
                return
            answer = await self.store.get(ticket.partition, near.key, now)
        except Exception as exc:
            self.failed(exc)
            return
        if answer is not None and answer.kind == "chat":
            ticket.answer, ticket.status, ticket.similarity = answer, HIT_SEMANTIC, near.similarity

    # storing -------------------------------------------------------------------------------
    def keep(self, ticket: CacheTicket, completion: dict[str, Any], served: LedgerEntry,
             call: Call, encoded: bytes | None = None) -> None:  # fmt: skip
        """Store a served answer (an OpenAI ``chat.completion``; ``encoded``: its JSON, when
        the reply already made it) behind the reply."""
        if ticket.store and not _clamped(ticket, completion, call):
            self.spawn(self._put_chat(ticket, encoded or completion, served))

    def capture(self, ticket: CacheTicket | None) -> StreamCapture | None:
        """What assembles a streamed answer for storing (None: it is not to be stored)."""
        return StreamCapture() if ticket is not None and ticket.store else None

    def keep_stream(
        self,
        ticket: CacheTicket,
        capture: StreamCapture,
        usage: Mapping[str, Any] | None,
        served: LedgerEntry,
        call: Call,
    ) -> None:
        """Store a stream that completed normally (every choice finished)."""
        completion = capture.completion(usage)
        if completion is not None:
            self.keep(ticket, completion, served, call)

    async def _put_chat(self, ticket: CacheTicket, completion: dict[str, Any] | bytes,
                        served: LedgerEntry) -> None:  # fmt: skip
        if not self.up:  # the backend is resting after a failure
            return
        now = self._clock()
        try:
            body = completion if isinstance(completion, bytes) else orjson.dumps(completion)
            body = compact(body)
            answer = CachedAnswer(
                key=ticket.key, kind="chat", body=body,
                model_served=served.model_served, provider=served.provider, cost=served.cost,
                revenue=served.revenue, input_tokens=served.input_tokens,
                output_tokens=served.output_tokens, created_at=now,
                expires_at=now + ticket.ttl_s, prompt=ticket.prompt,
            )  # fmt: skip
            if answer.size > self.max_entry_bytes:
                return
            await self.store.put(ticket.partition, [answer], limits(ticket.policy), now)
            self.event("stored")
            await self._index(ticket, now)
        except Exception as exc:
            self.failed(exc)

    async def _index(self, ticket: CacheTicket, now: float) -> None:
        """Index a stored answer's question for semantic lookups (embedding it now if its
        lookup did not: a ``no-cache`` request, or an exact miss that skipped the embedder)."""
        if ticket.context is None or not ticket.prompt or self.embedder is None:
            return
        vector = ticket.vector or await self.embedder.embed(ticket.prompt)
        if vector is not None:
            await self.store.add_vector(ticket.partition, ticket.context, ticket.key, vector, now)

    async def put_answers(self, partition: Partition, answers: list[CachedAnswer],
                          policy: CachePolicy) -> None:  # fmt: skip
        """Store ``answers`` (embedding items) in ``partition``; failures are logged."""
        kept = [a for a in answers if a.size <= self.max_entry_bytes]
        if not kept or not self.up:
            return
        try:
            await self.store.put(partition, kept, limits(policy), self._clock())
            self.event("stored")
        except Exception as exc:
            self.failed(exc)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` behind the reply; ``close`` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # failures and events ---------------------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    @property
    def up(self) -> bool:
        """The backend is not resting after a failure (``BACKOFF_S``): a Redis that hangs
        costs one request its timeout every few seconds, not every request."""
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        """A backend (or embedder) failure: counted, and logged at most every 10 seconds. A
        backend failure rests the cache for ``BACKOFF_S`` (requests are ``bypass``)."""
        self.event("error")
        now = time.monotonic()
        if isinstance(exc, CacheUnavailable):
            self._down_until = now + BACKOFF_S
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("the response cache is skipped: %s: %s", type(exc).__name__, exc)

    def event(self, name: str) -> None:
        if self._on_event is not None:
            try:
                self._on_event(name)
            except Exception:  # a metric must not fail a request
                log.exception("cache event sink failed")


def ttl_of(policy: CachePolicy, ask: CacheAsk) -> int:
    """How long an answer is kept: the plan's ``ttl_s``, or less if the request asked."""
    return policy.ttl_s if ask.ttl_s is None else min(ask.ttl_s, policy.ttl_s)


def limits(policy: CachePolicy) -> CacheLimits:
    return CacheLimits(policy.max_entries, policy.max_bytes)


def partition_of(call: Call) -> Partition | None:
    """The request's partition: its tenant, and the namespace its plan's ``partition``
    (``k:<key id>``, ``u:<user>``) and its X-Farebox-Cache-Namespace make
    (``core.cache.compose_namespace``). None when the plan partitions by user and the request
    names none (X-Farebox-User, ``user`` or ``safety_identifier``): users are never pooled."""
    who = call.principal
    mode = call.plan.cache.partition
    client = who.cache.namespace or ""
    if mode == "tenant":
        return Partition(who.tenant.id, compose_namespace("", client) if client else "")
    if mode == "key":
        part = "k:" + who.key.id
    else:
        user = who.user or openai_user(call.body) or openai_user(call.body, "safety_identifier")
        if user is None:
            return None
        part = "u:" + user
    return Partition(who.tenant.id, compose_namespace(part, client))


RESPONSES_OWN = frozenset({"input", "previous_response_id"})  # in the chat body, or not content


def scope_of(call: Call) -> str:
    """The key's scope: the client's format; for a Responses request, also a digest of its
    fields beyond the conversation (a native deployment gets the request as it is)."""
    responses = call.responses
    if responses is None:
        return call.flavor
    extras = {k: v for k, v in answer_fields(responses).items() if k not in RESPONSES_OWN}
    return "responses:" + hashlib.sha256(encoded(extras)).hexdigest()[:32]


def cool_enough(temperature: Any, policy: CachePolicy) -> bool:
    """The request's temperature is at most the plan's semantic maximum (exactly)."""
    if temperature is None:
        return True
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return False
    try:
        return Fraction(temperature) * policy.max_temperature_den <= policy.max_temperature_num
    except (ValueError, OverflowError):  # nan, inf
        return False


def _clamped(ticket: CacheTicket, completion: Mapping[str, Any], call: Call) -> bool:
    """An answer cut short by an output cap admission lowered (a budget nearly spent): not
    the answer the key asks for."""
    body = call.body
    if body.get("max_completion_tokens", body.get("max_tokens")) == ticket.cap:
        return False
    choices = completion.get("choices")
    return not isinstance(choices, list) or any(
        isinstance(c, dict) and c.get("finish_reason") == "length" for c in choices
    )


async def _quietly(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except Exception:
        log.exception("closing the response cache failed")
