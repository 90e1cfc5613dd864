"""Issue [12], acceptance 7 (the stage's part) and rate limits: a cache backend that fails on
every call, or a full one, never fails a request; bad cache headers are a clear 400, never a
5xx; and a hit is a request like any other for the rate limits."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import strategies as st

from farebox.core.cache import BYPASS, HIT_EXACT, MISS, CacheLimits, Partition
from farebox.errors import CacheUnavailable
from farebox.stores.memory.cache import MemoryCache
from tests.cache_gateway import CountingMock, ask, auth, config, post
from tests.drawn import draw

EMBED = "text-embedding-3-small"


class BrokenCache:
    """A ``CacheStore`` whose backend is down: every call fails."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def _fail(self) -> Any:
        self.calls += 1
        raise self.error

    async def get(self, partition: Partition, key: str, now: float) -> Any:
        return self._fail()

    async def get_many(self, partition: Partition, keys: Sequence[str], now: float) -> Any:
        return self._fail()

    async def put(self, partition: Partition, answers: Any, limits: CacheLimits, now: float) -> Any:
        return self._fail()

    async def add_vector(self, *args: Any) -> Any:
        return self._fail()

    async def nearest(self, *args: Any) -> Any:
        return self._fail()

    async def usage(self, tenant: str) -> Any:
        return self._fail()

    async def purge(self, tenant: str, namespace: str | None = None) -> Any:
        return self._fail()

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "error", [CacheUnavailable("redis is down"), RuntimeError("a bug in the backend")]
)
async def test_a_backend_that_always_fails_is_skipped_with_a_warning(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:  # fmt: skip
    broken = BrokenCache(error)
    monkeypatch.setattr("farebox.app.MemoryCache", lambda clock: broken)
    mock = CountingMock()
    caplog.set_level(logging.WARNING, logger="farebox.cache")
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        for body in (ask(), ask(), ask(stream=True), ask(stream=True)):
            r = await post(gw, key, body)
            assert r.status_code == 200, r.text
            assert r.headers["x-farebox-cache"] == BYPASS
        for path, body in (("/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 9,
                                             "messages": [{"role": "user", "content": "hi"}]}),
                           ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi"}),
                           ("/v1/embeddings", {"model": EMBED, "input": ["a", "b"]})):  # fmt: skip
            r = await post(gw, key, body, path)
            assert r.status_code == 200, r.text
            assert r.headers["x-farebox-cache"] == BYPASS
        assert mock.chats == 6 and len(mock.embedded) == 1
        assert broken.calls >= 12  # each lookup, and each store behind its answer
        assert {e.status for e in await gw.ledger("acme")} == {"ok"}
    warned = [r for r in caplog.records if r.name == "farebox.cache"]
    assert len(warned) == 1  # once per 10 seconds, not once per request
    assert "the response cache is skipped" in warned[0].getMessage()


async def test_a_full_cache_still_serves(make_gateway: Any) -> None:
    plans = {
        "one": {"models": ["*"], "cache": {"mode": "exact", "max_entries": 1}},
        "tiny": {"models": ["*"], "cache": {"mode": "exact", "max_bytes": 1024}},
    }
    mock = CountingMock(mean_tokens=400, min_tokens=300)
    async with make_gateway(config(plans), providers={"sim": mock}) as gw:
        one = await gw.tenant_key("acme", plan="one")
        assert (await post(gw, one, ask("a"))).headers["x-farebox-cache"] == MISS
        assert (await post(gw, one, ask("a"))).headers["x-farebox-cache"] == HIT_EXACT
        assert (await post(gw, one, ask("b"))).headers["x-farebox-cache"] == MISS  # evicts a
        assert (await post(gw, one, ask("a"))).headers["x-farebox-cache"] == MISS
        tiny = await gw.tenant_key("globex", plan="tiny")
        for _ in range(3):  # each answer is larger than the whole cache: never stored
            r = await post(gw, tiny, ask("long answer please"))
            assert r.status_code == 200 and r.headers["x-farebox-cache"] == MISS
        assert mock.chats == 3 + 3


async def test_hits_count_against_the_rate_limits(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="limited")  # 3 requests per minute per key
        first = await post(gw, key, ask())
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        hit = await post(gw, key, ask())
        assert hit.headers["x-farebox-cache"] == HIT_EXACT
        assert hit.headers["x-ratelimit-limit-requests"] == "3"
        assert hit.headers["x-ratelimit-remaining-requests"] == "1"
        assert (await post(gw, key, ask(stream=True))).status_code == 200
        refused = await post(gw, key, ask())  # the 4th, although it would be a hit
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "retry-after" in refused.headers
        assert mock.chats == 1
        ledger = await gw.ledger("acme")
        assert [e.status for e in ledger] == ["ok", "cache_hit", "cache_hit"]
        assert all(e.reservation_id for e in ledger)  # each settled its own counters


HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),
    st.integers(-(10**15), 10**15).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "1",
            "5",
            "1.5",
            "-1",
            "no-cache",
            "no-store",
            "x" * 64,
            "x" * 65,
            "no-cache, no-store",
            "NO-STORE",
            "max-age=0",
        ]
    ),  # fmt: skip
)
HEADERS = ["x-farebox-cache-ttl", "X-Farebox-Cache-Namespace", "Cache-Control"]


async def test_bad_cache_headers_are_a_400_never_a_5xx(make_gateway: Any) -> None:
    examples = draw(st.tuples(st.sampled_from(HEADERS), HEADER_VALUES), 150)
    async with make_gateway(config()) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        seen = set()
        for name, value in examples:
            headers: dict[str, Any] = {**auth(key), name: value.encode("latin-1")}
            r = await gw.client.post("/v1/chat/completions", json=ask(), headers=headers)
            seen.add(r.status_code)
            assert r.status_code in (200, 400), (name, value, r.text)
            if r.status_code == 400:
                error = r.json()["error"]
                assert error["param"] == name and error["type"] == "invalid_request_error"
            else:
                assert r.headers["x-farebox-cache"] in (MISS, HIT_EXACT, BYPASS)
        assert seen == {200, 400}
        for name, value in (("x-farebox-cache-ttl", "0"), ("x-farebox-cache-ttl", "soon"),
                            ("X-Farebox-Cache-Namespace", "x" * 65),
                            ("X-Farebox-Cache-Namespace", "caf\xe9")):  # fmt: skip
            headers = {**auth(key), name: value.encode("latin-1")}
            r = await gw.client.post("/v1/embeddings", json={"model": EMBED, "input": "x"},
                                     headers=headers)  # fmt: skip
            assert r.status_code == 400 and r.json()["error"]["param"] == name


async def test_an_unreadable_entry_is_a_miss(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Corrupting(MemoryCache):
        corrupt = False

        async def get(self, partition: Partition, key: str, now: float) -> Any:
            found = await super().get(partition, key, now)
            if found is not None and self.corrupt:
                return dataclasses.replace(found, body=b'["not a completion"')
            return found

    store = Corrupting()
    monkeypatch.setattr("farebox.app.MemoryCache", lambda clock: store)
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        assert (await post(gw, key, ask())).headers["x-farebox-cache"] == MISS
        store.corrupt = True
        r = await post(gw, key, ask())
        assert r.status_code == 200 and r.headers["x-farebox-cache"] == MISS
        assert mock.chats == 2
        assert [e.status for e in await gw.ledger("acme")] == ["ok", "ok"]
