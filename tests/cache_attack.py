"""Issue [12] acceptance 1, the attack shared by the cache isolation tests
(``tests.test_cache_isolation_e2e``): two tenants, and namespaces of one tenant, send identical
and near-identical prompts, and every answer is checked against who could have stored it.

The upstream is :class:`EchoUpstream`: every call it answers gets a serial number of its own
and echoes the last user message (``<serial> prompt``). A miss's answer is therefore unique,
and owned by the partition that asked; a hit must carry the answer a miss of the *same*
partition got. An answer that crossed a partition would carry another partition's serial.

The gateway is only ever seen through HTTP: ``send`` is given an ``httpx.AsyncClient`` and a
base URL (in-process ASGI, a ``--workers 2`` server, or one of two replicas).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import orjson

from fakes import Recorded, Reply
from fakes.openai_upstream import OpenAIUpstream, chat_completion, frame, stream_chunks, usage_chunk
from fakes.openai_upstream import usage as usage_of

HIT_EXACT, HIT_SEMANTIC, MISS, BYPASS = "hit-exact", "hit-semantic", "miss", "bypass"
VERDICTS = (HIT_EXACT, HIT_SEMANTIC, MISS, BYPASS)
NAMESPACE = "X-Farebox-Cache-Namespace"
# prompts and a near-identical rewording of each (cosine >= 0.98 with all-MiniLM-L6-v2 int8,
# the same capitalised words and no numbers, so the veto has nothing to refuse); the topics
# are far apart, so one pair's prompts never answer another's
PAIRS = (
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the refund policy?", "What's the refund policy?"),
    ("Please explain how the billing works", "Please explain how billing works"),
)
PLANS: dict[str, Any] = {
    "exact": {"models": ["*"], "cache": {"mode": "exact", "ttl_s": 3600}},
    "semantic": {"models": ["*"], "cache": {"mode": "semantic", "ttl_s": 3600}},
    "by-user": {"models": ["*"], "cache": {"mode": "exact", "partition": "user"}},
    "by-key": {"models": ["*"], "cache": {"mode": "exact", "partition": "key"}},
}
CACHE: dict[str, Any] = {"semantic": {"embedder": "local", "threshold": 0.95, "veto": True}}


def echo_config(upstream_url: str) -> dict[str, Any]:
    """``providers`` and ``models`` of a gateway whose every model is the echo upstream."""
    up = {"kind": "openai", "base_url": upstream_url, "api_key": "env:ECHO_UPSTREAM_KEY"}
    models = {m: [{"provider": "echo", "model": m}] for m in ("gpt-4o-mini", "gpt-4o")}
    return {"providers": {"echo": up}, "models": models}


# --- the upstream ---------------------------------------------------------------------------


class EchoUpstream(OpenAIUpstream):
    """Answers each chat call with ``<run:serial> last user message``, a serial per call."""

    def __init__(self) -> None:
        super().__init__()
        self._run = secrets.token_hex(3)
        self._serials = itertools.count(1)
        self.answers: list[str] = []

    def chat_calls(self) -> int:
        return sum(1 for r in self.requests if r.path == "/v1/chat/completions")

    def default_reply(self, request: Recorded) -> Reply:
        if request.path != "/v1/chat/completions":
            return super().default_reply(request)
        body = request.json or {}
        text = f"<{self._run}:{next(self._serials)}> {last_user(body)}"
        self.answers.append(text)
        model = str(body.get("model") or "gpt-4o-mini")
        if not body.get("stream"):
            return Reply(body=chat_completion(text, usage_=usage_of(12, 6), model=model))
        half = len(text) // 2
        chunks: list[Any] = [*stream_chunks((text[:half], text[half:])), usage_chunk(usage_of())]
        return Reply(frames=[frame(item) for item in [*chunks, "[DONE]"]])


def last_user(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content", "")
    return content if isinstance(content, str) else orjson.dumps(content).decode()


# --- who asks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A caller in one partition: a tenant's key, plus the headers that pick the namespace
    (``X-Farebox-Cache-Namespace``) or the user (for a ``partition: user`` plan)."""

    tenant: str
    key: str
    namespace: str | None = None
    user: str | None = None
    label: Hashable = None  # what the partition is, for the checks (default: tenant + ns)

    @property
    def partition(self) -> Hashable:
        return self.label if self.label is not None else (self.tenant, self.namespace or "")

    def headers(self) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.key}"}
        if self.namespace is not None:
            out[NAMESPACE] = self.namespace
        if self.user is not None:
            out["X-Farebox-User"] = self.user
        return out


@dataclass(frozen=True)
class Seen:
    """One answer as the client saw it."""

    part: Part
    prompt: str
    status: int
    verdict: str
    content: str
    cost_usd: str | None
    similarity: str | None
    stream: bool
    server: int


def chat_body(prompt: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "max_tokens": 32,
        "messages": [
            {"role": "system", "content": "You answer support questions briefly."},
            {"role": "user", "content": prompt},
        ],
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def stream_text(raw: str) -> str:
    parts: list[str] = []
    for event in raw.split("\n\n"):
        if not event.startswith("data: {"):
            continue
        for choice in orjson.loads(event[6:]).get("choices") or []:
            parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


@dataclass
class Gateways:
    """One or more base URLs of the same gateway (one process, workers, or replicas)."""

    client: httpx.AsyncClient
    urls: Sequence[str]
    seen: list[Seen] = field(default_factory=list)

    async def send(self, part: Part, prompt: str, server: int = 0, stream: bool = False) -> Seen:
        index = server % len(self.urls)
        url = f"{self.urls[index]}/v1/chat/completions"
        r = await self.client.post(url, json=chat_body(prompt, stream), headers=part.headers())
        assert r.status_code == 200, (part, prompt, r.status_code, r.text[:400])
        if stream:
            content = stream_text(r.text)
        else:
            content = r.json()["choices"][0]["message"]["content"]
        seen = Seen(
            part, prompt, r.status_code, r.headers.get("x-farebox-cache", ""), content,
            r.headers.get("x-farebox-cost-usd"), r.headers.get("x-farebox-cache-similarity"),
            stream, index,
        )  # fmt: skip
        self.seen.append(seen)
        return seen


# --- the checks -----------------------------------------------------------------------------


def echoed_prompt(content: str) -> str:
    return content.split("> ", 1)[1]


def check_isolation(seen: Sequence[Seen], upstream_calls: int) -> dict[Hashable, Counter[str]]:
    """Every answer was served to the partition that owns it. Returns the verdicts per
    partition. A miss's answer is a fresh upstream answer (owned by the miss's partition); a
    hit's answer is one a miss of the same partition got before; an exact hit's answer echoes
    the very prompt asked; a hit costs 0; the upstream saw one call per miss and no more."""
    owner: dict[str, Hashable] = {}
    verdicts: dict[Hashable, Counter[str]] = defaultdict(Counter)
    for s in seen:
        assert s.verdict in VERDICTS, s
        verdicts[s.part.partition][s.verdict] += 1
        if s.verdict in (MISS, BYPASS):
            assert s.content not in owner, f"two misses got one upstream answer: {s}"
            owner[s.content] = s.part.partition
    for s in seen:
        if s.verdict not in (HIT_EXACT, HIT_SEMANTIC):
            continue
        came_from = owner.get(s.content)
        assert came_from == s.part.partition, (
            f"a hit served {s.part.partition!r} the answer of {came_from!r}: {s}"
        )
        assert s.cost_usd is None or Decimal(s.cost_usd) == 0, s
        if s.verdict == HIT_EXACT:
            assert echoed_prompt(s.content) == s.prompt, s
        else:
            assert s.similarity is not None and Decimal(s.similarity) <= 1, s
    misses = sum(1 for s in seen if s.verdict in (MISS, BYPASS))
    assert upstream_calls == misses, f"upstream answered {upstream_calls}, misses {misses}"
    return dict(verdicts)


def hits_per_tenant(seen: Sequence[Seen]) -> Counter[str]:
    return Counter(s.part.tenant for s in seen if s.verdict in (HIT_EXACT, HIT_SEMANTIC))


# --- the attack -----------------------------------------------------------------------------

Settle = Callable[[Part], Awaitable[None]]


async def no_settle(_part: Part) -> None:
    return None


@dataclass
class Attack:
    """The scripted attack on a gateway. ``strict``: one cache behind every URL (one
    process, or replicas sharing Redis), so a repeated request must hit; with per-worker
    caches (``--workers 2`` on SQLite) a repeat may land on the other worker and miss.
    ``settle``: wait until a miss's answer is stored (when the store lags the reply)."""

    gw: Gateways
    strict: bool
    settle: Settle = no_settle

    async def first(self, part: Part, prompt: str, server: int = 0) -> Seen:
        """A partition's first request for ``prompt``: nothing of its own to hit."""
        s = await self.gw.send(part, prompt, server)
        assert s.verdict == MISS, f"{part.partition!r} never asked this, yet: {s}"
        await self.settle(part)
        return s

    async def repeat(self, part: Part, prompt: str, earlier: Seen, server: int = 1) -> Seen:
        s = await self.gw.send(part, prompt, server)
        if self.strict:
            assert s.verdict == HIT_EXACT, f"a repeat in one partition missed: {s}"
            assert s.content == earlier.content, (s, earlier)
        elif s.verdict == MISS:
            await self.settle(part)
        return s

    async def sequential(self, parts: Sequence[Part], semantic: bool) -> None:
        """For each pair: every partition but the last asks the prompt (a miss) and again (an
        exact hit, on the next server), then the near-identical wording (the exact plan
        misses; the semantic one may hit, with the same partition's answer); the last
        partition asks the wording first and must miss although everyone else has it."""
        *asking, late = parts
        for base, variant in PAIRS:
            for part in asking:
                await self.repeat(part, base, await self.first(part, base))
            for n, part in enumerate(asking):
                s = await self.gw.send(part, variant, n)
                await self.reworded(s, semantic, self.fetched(part, base))
            await self.first(late, variant, 1)
            await self.reworded(await self.gw.send(late, base, 0), semantic)

    def fetched(self, part: Part, prompt: str) -> set[str]:
        """The answers ``part``'s misses of ``prompt`` fetched (one with a shared cache; one
        per worker at most with ``--workers 2``)."""
        seen = self.gw.seen
        return {
            s.content for s in seen if s.part == part and s.prompt == prompt and s.verdict == MISS
        }

    async def reworded(self, s: Seen, semantic: bool, own: set[str] | None = None) -> None:
        """A near-identical wording: a miss on the exact plan; on the semantic one, a miss or
        a semantic hit with an answer the partition itself fetched (one of ``own``, when
        given; ``check_isolation`` checks every hit's owner anyway)."""
        if s.verdict == HIT_SEMANTIC and semantic:
            assert own is None or s.content in own, (s, own)
            return
        assert s.verdict == MISS, s
        await self.settle(s.part)

    async def concurrent(self, parts: Sequence[Part], rounds: int = 3, width: int = 16) -> None:
        """Every partition asks every prompt ``rounds`` times, shuffled, ``width`` at once,
        spread over the servers: only ``check_isolation`` judges these."""
        prompts = [p for pair in PAIRS for p in pair]
        asks = [(part, p) for part in parts for p in prompts for _ in range(rounds)]
        random.Random(12).shuffle(asks)
        gate = asyncio.Semaphore(width)

        async def one(n: int, part: Part, prompt: str) -> None:
            async with gate:
                await self.gw.send(part, prompt, n)

        await asyncio.gather(*(one(n, part, p) for n, (part, p) in enumerate(asks)))

    async def streams(self, parts: Sequence[Part]) -> None:
        """Each partition streams a prompt it asked before: its own answer comes back."""
        for n, part in enumerate(parts):
            before = [s for s in self.gw.seen if s.part == part and s.prompt == PAIRS[0][0]]
            s = await self.gw.send(part, PAIRS[0][0], n, stream=True)
            if s.verdict == HIT_EXACT or (self.strict and before):
                assert s.content in {b.content for b in before}, (s, before)


# --- waiting for stores, and erasure ----------------------------------------------------------

Admin = Callable[[str, str], Awaitable[httpx.Response]]
STORED_TIMEOUT_S = 10.0


def stored_settle(gw: Gateways, admin: Admin) -> Settle:
    """A ``settle`` that waits until the tenant's cache holds at least one entry per miss it
    had (``GET /admin/v1/tenants/{id}/cache``), for a store that lags the reply."""

    async def settle(part: Part) -> None:
        want = sum(1 for s in gw.seen if s.part.tenant == part.tenant and s.verdict == MISS)
        deadline = asyncio.get_running_loop().time() + STORED_TIMEOUT_S
        while True:
            r = await admin("GET", f"/admin/v1/tenants/{part.tenant}/cache")
            assert r.status_code == 200, r.text
            held = r.json()["entries"]
            if held is not None and held >= want:
                return
            assert asyncio.get_running_loop().time() < deadline, (part, held, want)
            await asyncio.sleep(0.02)  # polling interval; the deadline bounds the wait

    return settle


async def purge_one_namespace(attack: Attack, admin: Admin, parts: Sequence[Part]) -> None:
    """``DELETE .../cache?namespace=n1`` on the first tenant erases that namespace only: its
    next request misses, its other namespace and another tenant's ``n1`` still hit (strict
    gateways only). Then erasing the second tenant entirely leaves the first's entries."""
    by_ns = {(p.tenant, p.namespace): p for p in parts}
    first, second = parts[0].tenant, next(p.tenant for p in parts if p.tenant != parts[0].tenant)
    base = PAIRS[0][0]
    r = await admin("DELETE", f"/admin/v1/tenants/{first}/cache?namespace=n1")
    assert r.status_code == 200 and r.json()["purged"] >= 1, r.text
    assert (await attack.gw.send(by_ns[first, "n1"], base, 1)).verdict == MISS
    assert (await attack.gw.send(by_ns[first, "n2"], base, 1)).verdict == HIT_EXACT
    assert (await attack.gw.send(by_ns[second, "n1"], base, 0)).verdict == HIT_EXACT
    r = await admin("DELETE", f"/admin/v1/tenants/{second}/cache")
    assert r.status_code == 200 and r.json()["purged"] >= 1, r.text
    assert (await attack.gw.send(by_ns[second, None], base, 1)).verdict == MISS
    assert (await attack.gw.send(by_ns[first, None], base, 0)).verdict == HIT_EXACT
