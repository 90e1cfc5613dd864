"""Issue [7] item 1: a request never pins its budget hold or its concurrency slot.

Malformed bodies are refused at the edge before anything is reserved; a bug in a provider or a
translator answers 502 ``upstream_translation_failed`` and ends its admission; a client that
goes away (a cancelled request, a stream closed before its first byte) ends it too. Afterwards
the key serves as many requests at once as its ``concurrent`` limit says, every budget's
``reserved_usd`` is back to 0, and no lease is left for the reclaimer to turn into an
``unsettled`` entry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from fakes.anthropic_upstream import AnthropicUpstream
from farebox.core.money import parse_usd
from farebox.providers.base import ChatRequest, ChatResult, EmbedRequest, EmbedResult, StreamItem
from farebox.providers.mock import MockOptions, MockProvider

CHAT = "/v1/chat/completions"
OK = {"model": "gpt-4o-mini", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
SLOTS = 3
DEADLINE_S = 10.0
PLANS: dict[str, Any] = {
    "p": {
        "models": ["*"],
        "rate_limits": [{"scope": "key", "concurrent": SLOTS}],
        "budgets": [{"period": "day", "limit_usd": "5"}],
    }
}
# gpt-4o-mini output is USD 0.60 per 1M tokens: one request at max_tokens 1000 holds about
# USD 0.0006, so four pinned holds would exhaust this global budget
GLOBAL = {"global": [{"scope": "global", "period": "day", "limit_usd": "0.002"}]}


def config(**extra: Any) -> dict[str, Any]:
    return {"providers": {"sim": {"kind": "mock", "seed": 3}}, "plans": PLANS, **extra}


class Gated(MockProvider):
    """The mock, but every call waits at a gate: it records how many are inside at once."""

    def __init__(self) -> None:
        super().__init__("sim", MockOptions(seed=3))
        self.inside = 0
        self.most = 0
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def _enter(self) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        self.entered.set()
        try:
            await self.gate.wait()
        finally:
            self.inside -= 1

    async def chat(self, request: ChatRequest) -> ChatResult:
        await self._enter()
        return await super().chat(request)


class Buggy(MockProvider):
    """A provider adapter with a bug: it raises something that is not an ``UpstreamError``."""

    def __init__(self, when: str = "chat") -> None:
        super().__init__("sim", MockOptions(seed=3))
        self.when = when

    async def chat(self, request: ChatRequest) -> ChatResult:
        raise KeyError("choices")

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        if self.when == "stream-midway":
            async for item in super().chat_stream(request):
                yield item
                raise KeyError("delta")
        raise KeyError("delta")

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        raise TypeError("embedding")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def reserved(gw: Any, key: str) -> list[int]:
    me = (await gw.client.get("/v1/me", headers=auth(key))).json()
    return [parse_usd(b["reserved_usd"]) for b in me["budgets"]]


async def eventually(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.01)  # polling interval; the deadline bounds the wait
    raise AssertionError(f"{what}: not within {DEADLINE_S} s")


async def no_pinned_holds(gw: Any, key: str) -> None:
    """Nothing reserved, and no lease left behind for a reclaimer (even far in the future)."""
    await gw.app.state.services.ledger.flush()
    assert await reserved(gw, key) == [0] * len(await reserved(gw, key))
    assert await gw.store.reclaim_expired(time.time() + 10 * 86_400) == []
    assert [e for e in await gw.ledger() if e.status == "unsettled"] == []


async def all_slots_serve_at_once(gw: Any, key: str, gated: Gated) -> None:
    """``SLOTS`` requests are inside the provider at the same time: no slot is pinned."""
    sent = [asyncio.create_task(gw.client.post(CHAT, json=OK, headers=auth(key)))]
    sent += [
        asyncio.create_task(gw.client.post(CHAT, json=OK, headers=auth(key)))
        for _ in range(SLOTS - 1)
    ]
    await eventually("every slot in use", _reached(gated, SLOTS))
    gated.gate.set()
    answers = await asyncio.gather(*sent)
    assert [r.status_code for r in answers] == [200] * SLOTS, [r.text for r in answers]
    assert gated.most == SLOTS


def _reached(gated: Gated, count: int) -> Callable[[], Any]:
    async def check() -> bool:
        return gated.inside >= count

    return check


MALFORMED: list[tuple[str, str, dict[str, Any]]] = [
    ("tool-function-null", CHAT, {**OK, "tools": [{"type": "function", "function": None}]}),
    ("role-object", CHAT, {**OK, "messages": [{"role": {}, "content": "x"}]}),
    ("tool-name-object", CHAT, {**OK, "tools": [{"type": "function", "function": {"name": {}}}]}),
    ("messages-tools-strings", "/v1/messages", {**OK, "tools": ["x"]}),
]


@pytest.mark.parametrize(
    ("path", "body"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
async def test_malformed_requests_do_not_lock_a_concurrent_key(
    make_gateway: Any, path: str, body: dict[str, Any]
) -> None:
    gated = Gated()
    async with make_gateway(config(), providers={"sim": gated}) as gw:
        key = await gw.tenant_key("t", "p")
        for _ in range(SLOTS):
            sent = gw.client.post(path, json=body, headers=auth(key))
            r = await asyncio.wait_for(sent, DEADLINE_S)  # must not reach the (gated) provider
            assert r.status_code == 400, r.text
        assert gated.inside == 0 and await gw.ledger() == []  # refused before anything
        await no_pinned_holds(gw, key)
        await all_slots_serve_at_once(gw, key, gated)
        await no_pinned_holds(gw, key)


async def test_image_without_url_on_an_anthropic_deployment_is_refused_at_the_edge(
    make_gateway: Any,
) -> None:
    cfg = {
        "providers": {"claude": {"kind": "anthropic", "base_url": "", "api_key": "env:K"}},
        "models": {"smart": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
        "plans": PLANS,
    }
    async with AnthropicUpstream() as upstream:
        cfg["providers"]["claude"]["base_url"] = upstream.base_url
        async with make_gateway(cfg, env={"K": "sk-ant-test"}) as gw:
            key = await gw.tenant_key("t", "p")
            body = {
                **OK,
                "model": "smart",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            }
            for _ in range(SLOTS + 1):
                r = await gw.client.post(CHAT, json=body, headers=auth(key))
                assert r.status_code == 400, r.text
                assert r.json()["error"]["param"] == "messages[0].content[0].image_url.url"
            assert upstream.calls == 0 and await gw.ledger() == []
            await no_pinned_holds(gw, key)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_provider_bug_is_a_502_that_releases_its_hold(
    make_gateway: Any, stream: bool
) -> None:
    async with make_gateway(config(), providers={"sim": Buggy()}) as gw:
        key = await gw.tenant_key("t", "p")
        for _ in range(SLOTS + 2):
            r = await gw.client.post(CHAT, json={**OK, "stream": stream}, headers=auth(key))
            assert r.status_code == 502, r.text
            error = r.json()["error"]
            assert error["code"] == "upstream_translation_failed"
            assert "Nothing was billed" in error["message"]
            assert r.headers["x-should-retry"] == "false"
            assert r.headers["x-farebox-request-id"] in error["message"]
        await no_pinned_holds(gw, key)
        entries = await gw.ledger("t")
        assert len(entries) == SLOTS + 2
        assert {(e.status, e.http_status, e.error_code, e.cost) for e in entries} == {
            ("gateway_error", 502, "upstream_translation_failed", 0)
        }


async def test_a_provider_bug_is_logged_once_with_the_request_id(
    make_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_gateway(config(), providers={"sim": Buggy()}) as gw:
        key = await gw.tenant_key("t", "p")
        r = await gw.client.post(CHAT, json=OK, headers=auth(key))
        rid = r.headers["x-farebox-request-id"]
        logged = [rec for rec in caplog.records if rid in rec.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None
        assert "KeyError" in caplog.text


async def test_a_bug_midway_through_a_stream_ends_the_admission(make_gateway: Any) -> None:
    async with make_gateway(config(), providers={"sim": Buggy("stream-midway")}) as gw:
        key = await gw.tenant_key("t", "p")
        for _ in range(SLOTS + 1):
            r = await gw.client.post(CHAT, json={**OK, "stream": True}, headers=auth(key))
            assert r.status_code == 200
            assert "upstream_translation_failed" in r.text
        await no_pinned_holds(gw, key)
        statuses = {e.status for e in await gw.ledger("t")}
        assert statuses == {"gateway_error"}


async def test_embedding_provider_bug_releases_its_hold(make_gateway: Any) -> None:
    async with make_gateway(config(), providers={"sim": Buggy()}) as gw:
        key = await gw.tenant_key("t", "p")
        body = {"model": "text-embedding-3-small", "input": "hi"}
        for _ in range(SLOTS + 1):
            r = await gw.client.post("/v1/embeddings", json=body, headers=auth(key))
            assert r.status_code == 502 and "upstream_translation_failed" in r.text
        await no_pinned_holds(gw, key)


async def test_bugs_do_not_spend_the_global_budget_of_other_tenants(make_gateway: Any) -> None:
    async with make_gateway(config(budgets=GLOBAL), providers={"sim": Buggy()}) as gw:
        noisy = await gw.tenant_key("noisy", "p")
        for _ in range(17):
            r = await gw.client.post(CHAT, json=OK, headers=auth(noisy))
            assert r.status_code == 502, r.text
        await no_pinned_holds(gw, noisy)
    async with make_gateway(config(budgets=GLOBAL)) as gw:
        quiet = await gw.tenant_key("quiet", "p")
        r = await gw.client.post(CHAT, json=OK, headers=auth(quiet))
        assert r.status_code == 200, r.text
        await no_pinned_holds(gw, quiet)


async def test_malformed_requests_do_not_touch_the_global_budget(make_gateway: Any) -> None:
    async with make_gateway(config(budgets=GLOBAL)) as gw:
        noisy = await gw.tenant_key("noisy", "p")
        for _ in range(17):
            bad = {**OK, "tools": [{"type": "function", "function": None}]}
            assert (await gw.client.post(CHAT, json=bad, headers=auth(noisy))).status_code == 400
        quiet = await gw.tenant_key("quiet", "p")
        r = await gw.client.post(CHAT, json=OK, headers=auth(quiet))
        assert r.status_code == 200, r.text
        await no_pinned_holds(gw, quiet)


async def test_a_client_that_goes_away_during_the_upstream_call_releases_its_hold(
    make_gateway: Any,
) -> None:
    gated = Gated()
    async with make_gateway(config(), providers={"sim": gated}) as gw:
        key = await gw.tenant_key("t", "p")
        waiting = [
            asyncio.create_task(gw.client.post(CHAT, json=OK, headers=auth(key)))
            for _ in range(SLOTS)
        ]
        await eventually("every slot in use", _reached(gated, SLOTS))
        for task in waiting:
            task.cancel()
        for task in waiting:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert gated.inside == 0

        async def recorded() -> list[Any]:
            gone = [e for e in await gw.ledger("t") if e.status == "client_disconnected"]
            return gone if len(gone) == SLOTS else []

        gone = await eventually("the cancelled requests are recorded", recorded)
        assert {(e.http_status, e.usage_source, e.output_tokens) for e in gone} == {
            (499, "estimated", 0)
        }
        await no_pinned_holds(gw, key)
        gated.gate = asyncio.Event()
        gated.most = 0
        await all_slots_serve_at_once(gw, key, gated)


async def test_a_stream_closed_before_its_first_byte_releases_its_hold(make_gateway: Any) -> None:
    """The client is gone before the response starts: ``send`` fails on the first message."""
    async with make_gateway(config()) as gw:
        key = await gw.tenant_key("t", "p")
        body = orjson.dumps({**OK, "stream": True})
        for _ in range(SLOTS + 1):
            await _call_and_fail_on_send(gw.app, body, key)
            await gw.app.state.services.ledger.flush()  # its entry is written behind it
        await no_pinned_holds(gw, key)
        entries = await gw.ledger("t")
        assert [e.status for e in entries] == ["client_disconnected"] * (SLOTS + 1)


async def _call_and_fail_on_send(app: Any, body: bytes, key: str) -> None:
    sent: list[bytes] = [body]

    async def receive() -> dict[str, Any]:
        if sent:
            return {"type": "http.request", "body": sent.pop(), "more_body": False}
        await asyncio.Event().wait()  # never: the response fails first
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            raise OSError("connection reset by peer")

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": CHAT, "raw_path": CHAT.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("gateway", 80),
        "headers": [(b"authorization", f"Bearer {key}".encode()),
                    (b"content-type", b"application/json")],
    }  # fmt: skip
    with pytest.raises(OSError):
        await app(scope, receive, send)
