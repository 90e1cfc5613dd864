"""Issue [12]: the semantic lookup as the stage runs it (the embedder is a fake here: its
vectors are chosen by the test; the real ones have tests of their own). A semantic hit needs
the same partition and context (model, system prompt, earlier turns, tools, parameters), a
similar enough last user message, and no veto; ``n > 1`` and hot temperatures skip it; an
embedder that is busy skips it; an embedder that cannot load stops the start-up."""

from __future__ import annotations

import asyncio
import math
import struct
from typing import Any

import pytest

from farebox.core.cache import HIT_EXACT, HIT_SEMANTIC, HIT_STATUS, MISS
from farebox.errors import EmbedderUnavailable
from tests.cache_gateway import CountingMock, ask, config, post, text_of

PLANS = {"smart": {"models": ["*"], "cache": {"mode": "semantic"}}}
QUESTION = "How do I reset my password?"


def unit(similarity: float) -> bytes:
    """A unit vector whose cosine with ``unit(1.0)`` is ``similarity``."""
    return struct.pack("<4f", similarity, math.sqrt(max(1 - similarity**2, 0.0)), 0.0, 0.0)


class FakeEmbedder:
    """Vectors by text (unknown texts are orthogonal to everything); None: the queue is full."""

    name = "fake"

    def __init__(self, vectors: dict[str, bytes | None]) -> None:
        self.vectors = vectors
        self.texts: list[str] = []
        self.started = self.closed = False

    async def embed(self, text: str) -> bytes | None:
        self.texts.append(text)
        return self.vectors.get(text, struct.pack("<4f", 0.0, 0.0, 0.0, 1.0))

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> FakeEmbedder:
    fake = FakeEmbedder({
        QUESTION: unit(1.0),
        "how can i reset my password": unit(0.97),
        "How do I reset my password?!": unit(0.9),
        "busy": None,
    })  # fmt: skip
    monkeypatch.setattr("farebox.app.make_embedder", lambda *args: fake)
    return fake


async def test_a_similar_question_is_a_semantic_hit(make_gateway: Any, embedder: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        assert embedder.started
        key = await gw.tenant_key("acme", plan="smart")
        first = await post(gw, key, ask(QUESTION))
        assert first.headers["x-farebox-cache"] == MISS
        hit = await post(gw, key, ask("how can i reset my password"))
        assert hit.headers["x-farebox-cache"] == HIT_SEMANTIC
        assert hit.headers["x-farebox-cache-similarity"] == "0.9700"
        assert text_of(hit) == text_of(first)
        exact = await post(gw, key, ask(QUESTION))  # the exact lookup comes first
        assert exact.headers["x-farebox-cache"] == HIT_EXACT
        far = await post(gw, key, ask("How do I reset my password?!"))  # 0.90 < 0.95
        assert far.headers["x-farebox-cache"] == MISS
        assert mock.chats == 2
        ledger = await gw.ledger("acme")
        semantic = ledger[1]
        assert (semantic.status, semantic.cache, semantic.cost) == (HIT_STATUS, HIT_SEMANTIC, 0)
        assert semantic.saved == ledger[0].cost
        # the exact hit did not embed anything
        assert embedder.texts.count(QUESTION) == 1
    assert embedder.closed


async def test_the_context_must_match_and_some_requests_skip_it(
    make_gateway: Any, embedder: Any
) -> None:
    mock = CountingMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="smart")
        await post(gw, key, ask(QUESTION))
        similar = "how can i reset my password"
        system = {"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": similar}]}  # fmt: skip
        cases = [
            system,  # another system prompt: another context
            ask(similar, temperature=0.3),  # another parameter
            {**ask(similar), "model": "gpt-4o"},  # another model
            ask(similar, n=2),  # several choices: no semantic lookup
            ask(similar, temperature=1.5),  # hotter than the plan's 1.0
            ask("busy"),  # the embedder's queue is full: skipped, a miss
        ]
        for body in cases:
            r = await post(gw, key, body)
            assert r.status_code == 200, r.text
            assert r.headers["x-farebox-cache"] == MISS, body
        other = await gw.tenant_key("globex", plan="smart")
        assert (await post(gw, other, ask(similar))).headers["x-farebox-cache"] == MISS
        assert mock.chats == 1 + len(cases) + 1
        assert embedder.texts.count(similar) == 3 + 1  # not for n=2, nor at temperature 1.5


async def test_a_veto_refuses_a_similar_hit(
    make_gateway: Any, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def veto(cached: str, new: str) -> str | None:
        seen.append((cached, new))
        return "numbers differ"

    monkeypatch.setattr("farebox.gateway.cache.vetoed", veto)
    async with make_gateway(config(PLANS)) as gw:
        key = await gw.tenant_key("acme", plan="smart")
        await post(gw, key, ask(QUESTION))
        r = await post(gw, key, ask("how can i reset my password"))
        assert r.headers["x-farebox-cache"] == MISS
        assert seen == [(QUESTION, "how can i reset my password")]


async def test_a_no_cache_answer_is_indexed_for_later(make_gateway: Any, embedder: Any) -> None:
    async with make_gateway(config(PLANS)) as gw:
        key = await gw.tenant_key("acme", plan="smart")
        first = await post(gw, key, ask(QUESTION), **{"Cache-Control": "no-cache"})
        assert first.headers["x-farebox-cache"] == "bypass"
        hit = await post(gw, key, ask("how can i reset my password"))
        assert hit.headers["x-farebox-cache"] == HIT_SEMANTIC
        assert text_of(hit) == text_of(first)


class Unloadable(FakeEmbedder):
    async def start(self) -> None:
        raise EmbedderUnavailable("the semantic cache needs: pip install 'farebox[semantic]'")


async def test_an_embedder_that_cannot_load_stops_the_start(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("farebox.app.make_embedder", lambda *args: Unloadable({}))
    with pytest.raises(EmbedderUnavailable, match=r"farebox\[semantic\]"):
        async with make_gateway(config(PLANS)):
            pass


async def test_a_slow_embedder_makes_a_miss_not_a_wait(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup waits at most ``cache.semantic.wait_ms`` for its embedding: an embedder that
    does not answer makes a miss (counted ``skipped``), and the request is answered."""
    gate = asyncio.Event()

    class Stuck(FakeEmbedder):
        async def embed(self, text: str) -> bytes | None:
            await gate.wait()  # never set while the request runs
            return await super().embed(text)

    stuck = Stuck({})
    monkeypatch.setattr("farebox.app.make_embedder", lambda *args: stuck)
    mock = CountingMock()
    cfg = config(PLANS, cache={"semantic": {"wait_ms": 20}})
    async with make_gateway(cfg, providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="smart")
        r = await gw.client.post(
            "/v1/chat/completions", json=ask(QUESTION), headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200 and r.headers["x-farebox-cache"] == MISS
        assert mock.chats == 1
        gate.set()  # the answer is indexed behind the reply once the embedder answers
        await gw.app.state.services.gateway.cache.settled()
        hit = await post(gw, key, ask(QUESTION))
        assert hit.headers["x-farebox-cache"] == HIT_EXACT and mock.chats == 1
