"""The response cache for embeddings: one entry per input item (``core.cache.embedding_keys``),
so a batch with 3 known and 2 new inputs sends only the 2 new ones upstream, and gets every
item back in its own place.

A batch whose every item is cached is a hit (``cache_hits``). A partial hit is a miss whose
upstream call carried only the unknown items: its ledger entry is the upstream's (status
``ok``, cache ``miss``), with ``saved`` the cached items' original cost and, on top of the
upstream's revenue, the plan's ``hit_price`` share of the cached items' revenue. Each new
item is stored with its share of the upstream's cost, revenue and tokens, split exactly in
proportion to its estimated tokens (``core.cache.split_evenly``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from farebox.core.cache import (
    BYPASS,
    HIT_EXACT,
    CachedAnswer,
    embedding_keys,
    split_evenly,
)
from farebox.core.records import LedgerEntry
from farebox.core.tokens import estimate_input

if TYPE_CHECKING:
    from farebox.gateway.cache import CacheTicket, ResponseCache
    from farebox.gateway.call import Call

JSON = dict[str, Any]


@dataclass(slots=True)
class EmbedBatch:
    """An embeddings request's items, their keys, and the cached answer of each (or None)."""

    ticket: CacheTicket
    items: list[Any]
    keys: list[str]
    answers: list[CachedAnswer | None]

    @property
    def missing(self) -> list[int]:
        """The positions of the items to send upstream."""
        return [i for i, a in enumerate(self.answers) if a is None]

    @property
    def hits(self) -> int:
        return sum(a is not None for a in self.answers)

    @property
    def complete(self) -> bool:
        return all(a is not None for a in self.answers)

    @property
    def saved(self) -> int:
        """What the cached items cost originally."""
        return sum(a.cost for a in self.answers if a is not None)

    @property
    def hit_revenue(self) -> int:
        """The cached items' revenue, at the plan's ``hit_price``."""
        cached = sum(a.revenue for a in self.answers if a is not None)
        return self.ticket.policy.hit_price.revenue(cached)

    def upstream_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``body`` with only the items to send upstream (itself when none is cached)."""
        if not self.hits:
            return dict(body)
        return {**body, "input": [self.items[i] for i in self.missing]}


def input_items(value: Any) -> list[Any] | None:
    """An embeddings ``input`` as a list of items: a string, or one token array, is one item."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]
        return list(value)
    return None


async def lookup_items(cache: ResponseCache, call: Call, ticket: CacheTicket) -> EmbedBatch | None:
    """The batch of ``call``'s items, each looked up (unless the client said ``no-cache``);
    None when the input has no items the cache can key."""
    items = input_items(call.body.get("input"))
    if items is None:
        return None
    try:
        keys = embedding_keys(ticket.partition, {**call.body, "input": items})
    except Exception as exc:  # an unencodable item
        cache.failed(exc)
        return None
    if keys is None:
        return None
    batch = EmbedBatch(ticket, items, keys, [None] * len(items))
    if ticket.status == BYPASS:
        return batch
    try:
        found = await cache.store.get_many(ticket.partition, keys, cache.now())
    except Exception as exc:
        cache.failed(exc)
        ticket.status = BYPASS
        return batch
    batch.answers = [a if a is not None and a.kind == "embedding" else None for a in found]
    if batch.complete:
        ticket.status = HIT_EXACT
    return batch


def _data(result: Mapping[str, Any]) -> list[JSON]:
    data = [d for d in result.get("data") or () if isinstance(d, dict)]
    return sorted(data, key=lambda d: d.get("index", 0))


def _item(answer: CachedAnswer, index: int) -> JSON:
    item: JSON = orjson.loads(answer.body)
    item["index"] = index
    return item


def hit_embeddings(batch: EmbedBatch) -> JSON:
    """The reply body of a batch served from the cache alone."""
    found = [a for a in batch.answers if a is not None]
    tokens = sum(a.input_tokens for a in found)
    return {"object": "list", "data": [_item(a, i) for i, a in enumerate(found)],
            "model": found[0].model_served,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip


def merged(batch: EmbedBatch, result: Mapping[str, Any]) -> JSON:
    """The upstream's answer for the unknown items and the cached ones, each at its own
    ``index``; usage counts every item (the cached ones at their original tokens)."""
    fresh = iter(_data(result))
    data = []
    for i, answer in enumerate(batch.answers):
        if answer is None:
            data.append({**next(fresh), "index": i})
        else:
            data.append(_item(answer, i))
    usage = dict(result.get("usage") or {})
    cached = sum(a.input_tokens for a in batch.answers if a is not None)
    for name in ("prompt_tokens", "total_tokens"):
        usage[name] = int(usage.get(name) or 0) + cached
    return {**result, "data": data, "usage": usage}


def new_answers(batch: EmbedBatch, result: Mapping[str, Any], served: LedgerEntry,
                now: float) -> list[CachedAnswer]:  # fmt: skip
    """The items sent upstream, each as an entry with its share of ``served`` (the upstream
    call's entry: its cost, revenue and tokens)."""
    sent = batch.missing
    data = _data(result)
    if len(data) != len(sent):
        return []
    weights = [max(estimate_input(batch.items[i]), 1) for i in sent]
    costs = split_evenly(served.cost, weights)
    revenues = split_evenly(served.revenue, weights)
    tokens = split_evenly(served.input_tokens, weights)
    expires = now + batch.ticket.ttl_s
    out = []
    for j, i in enumerate(sent):
        item = {k: v for k, v in data[j].items() if k != "index"}
        out.append(CachedAnswer(
            key=batch.keys[i], kind="embedding", body=orjson.dumps(item),
            model_served=served.model_served, provider=served.provider, cost=costs[j],
            revenue=revenues[j], input_tokens=tokens[j], output_tokens=0, created_at=now,
            expires_at=expires,
        ))  # fmt: skip
    return out


async def keep_items(cache: ResponseCache, batch: EmbedBatch, result: Mapping[str, Any],
                     served: LedgerEntry) -> None:  # fmt: skip
    """Store the new items (behind the reply)."""
    try:
        answers = new_answers(batch, result, served, cache.now())
    except Exception as exc:
        cache.failed(exc)
        return
    await cache.put_answers(batch.ticket.partition, answers, batch.ticket.policy)
