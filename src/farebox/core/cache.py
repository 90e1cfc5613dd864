"""The response cache's pure parts: partitions, what a request asks of the cache, a plan's cache
policy, a cached answer, and the keys (a hash of the partition and the canonical request).

Standard library only. The stage that uses them is ``farebox.gateway.cache``; the stores that
keep entries implement ``farebox.stores.base.CacheStore``.

Isolation is by construction: every key begins with its partition, and every store keeps each
tenant's entries in structures of their own (``CacheStore``), so a lookup never sees another
tenant's entries, whatever the similarity code does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# the modes of a plan's ``cache.mode``
MODES = ("off", "exact", "semantic")
# what ``cache.partition`` splits a tenant's cache by, besides an explicit namespace
PARTITIONS = ("tenant", "key", "user")
# the ``x-farebox-cache`` header's values, and the ledger entry's ``cache`` field
HIT_EXACT, HIT_SEMANTIC, MISS, BYPASS = "hit-exact", "hit-semantic", "miss", "bypass"
# a hit's ledger status (``core.meters``: billed, counted by the ``cache_hits`` meter)
HIT_STATUS = "cache_hit"
MAX_NAMESPACE_CHARS = 64
# request fields that do not change the answer: left out of every key
IGNORED_FIELDS = frozenset(
    {
        "user",
        "stream",
        "stream_options",
        "metadata",
        "store",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
    }
)


@dataclass(frozen=True, slots=True)
class Partition:
    """Where an entry lives: a tenant, and a namespace within it ("" for the tenant's own).

    The namespace joins the plan's ``partition`` (a key id or a user) and the client's
    ``X-Farebox-Cache-Namespace``; stores keep each tenant apart, and each namespace apart
    within it."""

    tenant: str
    namespace: str = ""

    @property
    def label(self) -> str:
        """A printable, unambiguous name of the partition (for logs and tests)."""
        return json.dumps([self.tenant, self.namespace], separators=(",", ":"))


def compose_namespace(plan_part: str, client: str) -> str:
    """A partition's namespace from the plan's ``partition`` part (``k:<key id>``,
    ``u:<user>``, or "" for ``tenant``) and the client's ``X-Farebox-Cache-Namespace`` ("" when
    absent): "" when both are empty, else the canonical JSON pair (unambiguous whatever the
    two contain)."""
    if not plan_part and not client:
        return ""
    return json.dumps([plan_part, client], separators=(",", ":"), ensure_ascii=False)


def client_namespace(namespace: str) -> str:
    """The client's namespace within a partition's ``namespace`` (``compose_namespace``'s
    second part; the whole string when it is not a composed one)."""
    if namespace.startswith("["):
        try:
            pair = json.loads(namespace)
        except ValueError:
            return namespace
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
            return pair[1]
    return namespace


@dataclass(frozen=True, slots=True)
class CacheAsk:
    """What a request's headers ask of the cache: ``Cache-Control: no-cache`` (look nothing
    up, store the answer), ``no-store`` (neither), ``x-farebox-cache-ttl`` (seconds, at most
    the plan's) and ``X-Farebox-Cache-Namespace``."""

    lookup: bool = True
    store: bool = True
    ttl_s: int | None = None
    namespace: str | None = None


ASK_DEFAULT = CacheAsk()


@dataclass(frozen=True, slots=True)
class HitPrice:
    """What a hit earns, as a share of the original request's revenue: ``free`` (0/1),
    ``full`` (1/1), or a decimal fraction such as ``"0.5"`` (1/2)."""

    num: int = 1
    den: int = 1

    def revenue(self, original: int) -> int:
        """The hit's revenue in pico-USD, rounded half up (exact integers)."""
        return (original * self.num * 2 + self.den) // (self.den * 2)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """A plan's ``cache:`` section, as the request path sees it."""

    mode: str = "off"  # off | exact | semantic
    ttl_s: int = 3600
    max_entries: int = 10_000  # per tenant
    max_bytes: int = 64 * 1024 * 1024  # per tenant
    partition: str = "tenant"  # tenant | key | user
    hit_price: HitPrice = HitPrice()
    max_temperature_num: int = 1  # requests above this temperature skip the semantic cache
    max_temperature_den: int = 1

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def semantic(self) -> bool:
        return self.mode == "semantic"


CACHE_OFF = CachePolicy()


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """What one tenant may keep: entries and bytes (least recently used evicted first)."""

    max_entries: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """One cached answer.

    ``body``: for chat, the OpenAI ``chat.completion`` object (JSON bytes) the answer was
    rendered from, its ``usage`` the original's; for an embedding, one item's JSON
    (``{"embedding": ...}``). ``cost`` and ``revenue``: what the original request (or, for an
    embedding, this item's share of it) cost the platform and earned, in pico-USD: a hit's
    ``saved_usd`` and the base of its revenue. ``prompt``: the last user message, kept for
    the semantic veto (empty when not semantic)."""

    key: str
    kind: str  # "chat" | "embedding"
    body: bytes
    model_served: str
    provider: str
    cost: int
    revenue: int
    input_tokens: int
    output_tokens: int
    created_at: float
    expires_at: float
    prompt: str = ""

    @property
    def size(self) -> int:
        """The bytes this entry counts against its tenant's ``max_bytes``."""
        return len(self.body) + len(self.prompt.encode()) + len(self.key) + 64

    def live(self, now: float) -> bool:
        return now < self.expires_at


def storable(
    answers: Iterable[CachedAnswer], limits: CacheLimits, now: float
) -> list[CachedAnswer]:
    """The ``answers`` a store's ``put`` keeps: those live at ``now`` and no larger than
    ``limits.max_bytes``."""
    return [a for a in answers if a.size <= limits.max_bytes and a.live(now)]


@dataclass(frozen=True, slots=True)
class Neighbour:
    """The nearest cached question in a semantic context: its entry's key, the cosine
    similarity, and the cached question's text (for the veto)."""

    key: str
    similarity: float
    prompt: str


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """What a tenant's cache holds now (entries and bytes, live or not yet evicted)."""

    entries: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CacheTally:
    """One tenant's cache traffic over a period, from the ledger: hits (exact and semantic),
    misses, and what the cache saved (``saved``, pico-USD: the hits' original cost, and the
    cached items' of embeddings batches that were partly hits)."""

    tenant_id: str
    hits: int
    misses: int
    saved: int

    @property
    def hit_rate(self) -> tuple[int, int]:
        """Hits over lookups, as an exact ``(hits, hits + misses)``."""
        return self.hits, self.hits + self.misses


def tally_entries(
    entries: Iterable[Any], tenant_id: str | None, start: float | None, end: float | None
) -> list[CacheTally]:
    """``CacheTally`` rows from ledger entries (``LedgerEntry``-like: ``tenant_id``,
    ``started_at``, ``status``, ``cache``, ``saved``), per tenant with cache traffic, sorted
    by tenant id: the reference the stores' rollup-backed tallies are checked against."""
    sums: dict[str, list[int]] = {}
    for e in entries:
        if tenant_id is not None and e.tenant_id != tenant_id:
            continue
        if (start is not None and e.started_at < start) or (
            end is not None and e.started_at >= end
        ):
            continue
        row = sums.setdefault(e.tenant_id, [0, 0, 0])
        row[0] += e.status == HIT_STATUS
        row[1] += e.cache == MISS
        row[2] += e.saved  # a hit's, or a partial embeddings hit's (a miss that saved)
    return [CacheTally(t, *sums[t]) for t in sorted(sums) if sums[t][0] or sums[t][1]]


# keys ----------------------------------------------------------------------------------------
def canonical(value: Any) -> bytes:
    """A deterministic JSON encoding: sorted keys, no spaces, non-ASCII kept."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


Encoder = Callable[[Any], bytes]  # a deterministic encoding of a JSON value


def _digest(partition: Partition, scope: str, value: Any, encode: Encoder = canonical) -> str:
    head = canonical([partition.tenant, partition.namespace, scope])
    return hashlib.sha256(head + b"\x00" + encode(value)).hexdigest()


def answer_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request's fields that can change the answer (``IGNORED_FIELDS`` left out)."""
    return {k: v for k, v in body.items() if k not in IGNORED_FIELDS}


def exact_key(
    partition: Partition, scope: str, body: Mapping[str, Any], encode: Encoder = canonical
) -> str:
    """The exact cache's key: the partition, the endpoint ``scope`` (the client's format) and
    every field of the canonical request but ``IGNORED_FIELDS``. ``encode``: any
    deterministic encoding with sorted keys (the gateway passes a faster one)."""
    return _digest(partition, scope, answer_fields(body), encode)


def last_user_text(body: Mapping[str, Any]) -> str | None:
    """The text of the last message when it is a user message of text only; else None (the
    semantic cache then does not apply)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        if texts and all(isinstance(t, str) for t in texts) and len(texts) == len(content):
            return "\n".join(t for t in texts if isinstance(t, str))
    return None


def semantic_context(
    partition: Partition, scope: str, body: Mapping[str, Any], encode: Encoder = canonical
) -> str | None:
    """The key of everything a semantic hit must share with the cached request: the model,
    the system prompt and the conversation before the last user message, the tools and every
    parameter. None when the request has no last user message of text."""
    if last_user_text(body) is None:
        return None
    fields = answer_fields(body)
    fields["messages"] = list(body["messages"])[:-1]
    return _digest(partition, scope + ":semantic", fields, encode)


def embedding_keys(
    partition: Partition, body: Mapping[str, Any], encode: Encoder = canonical
) -> list[str] | None:
    """One key per input item of an embeddings request (the model and every other field
    shared); None when ``input`` is not a string or a list."""
    items = body.get("input")
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list) or not items:
        return None
    rest = {k: v for k, v in answer_fields(body).items() if k != "input"}
    return [_digest(partition, "embeddings", [rest, item], encode) for item in items]


def split_evenly(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (integers, exact: the parts sum to
    ``total``; the remainder goes to the largest fractional parts, earliest first)."""
    if not weights:
        return []
    whole = sum(weights)
    if whole <= 0:
        base, extra = divmod(total, len(weights))
        return [base + (1 if i < extra else 0) for i in range(len(weights))]
    parts = [total * w // whole for w in weights]
    rests = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in rests[: total - sum(parts)]:
        parts[i] += 1
    return parts
