"""Routing and resilience: failover across deployments, retry rounds honouring Retry-After,
per-deployment circuit breakers (half-open probes, state shared through the store), and
streams that fail after their first byte.

Upstreams are loopback fakes speaking the real wire formats (``tests/fakes``); time for the
breakers moves through an injected clock, never through sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fakes import Recorded, Reply
from fakes import anthropic_upstream as an
from fakes import openai_upstream as oa
from farebox.core.money import parse_usd
from farebox.core.pricing import Price
from farebox.core.routing import Target

PRIMARY, FALLBACK = "up-primary", "up-fallback"  # the upstream model names of the two deployments
A_DEPLOYMENT = f"primary/{PRIMARY}"
B_DEPLOYMENT = f"fallback/{FALLBACK}"
ENV = {"A_KEY": "sk-upstream-a", "B_KEY": "sk-upstream-b"}
COOLDOWN_S = 30.0
CHAT = {"model": "smart", "messages": [{"role": "user", "content": "route me"}], "max_tokens": 64}
# fallback price, USD per 1M tokens: input 3, output 5 -> pico-USD per token 3e6 and 5e6
B_PRICE = {"input": "3.00", "output": "5.00"}
A_PRICE = {"input": "1.00", "output": "2.00"}


class Upstream(oa.OpenAIUpstream):
    """An OpenAI fake whose unscripted answer can be switched to an error."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: int | None = None  # HTTP status every unscripted request gets
        self.hang = False  # unscripted streams: send headers, then nothing until closed
        self.arrived = asyncio.Event()  # set by every unscripted request

    def default_reply(self, request: Recorded) -> Reply:
        self.arrived.set()
        if self.hang:
            return Reply(frames=[], hold=True)
        if self.failing is None:
            return super().default_reply(request)
        error = {"message": "upstream exploded", "type": "server_error", "param": None}
        return Reply(status=self.failing, body={"error": {**error, "code": None}})


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def ups() -> AsyncIterator[tuple[Upstream, Upstream]]:
    async with Upstream() as a, Upstream() as b:
        yield a, b


def config(
    a_url: str,
    b_url: str | None = None,
    *,
    a_kind: str = "openai",
    failures: int = 3,
    retries: int = 0,
    backoff_s: float = 0.01,
    plans: dict[str, Any] | None = None,
) -> dict[str, Any]:
    providers: dict[str, Any] = {
        "primary": {"kind": a_kind, "base_url": a_url, "api_key": "env:A_KEY"}
    }
    deployments: list[dict[str, Any]] = [
        {"provider": "primary", "model": PRIMARY, "price": A_PRICE}
    ]
    if b_url is not None:
        providers["fallback"] = {"kind": "openai", "base_url": b_url, "api_key": "env:B_KEY"}
        deployments.append({"provider": "fallback", "model": FALLBACK, "price": B_PRICE})
    breaker = {"failures": failures, "cooldown_s": COOLDOWN_S, "sync_s": 3600.0}
    routing = {"retries": retries, "backoff_s": backoff_s, "breaker": breaker}
    out: dict[str, Any] = {"providers": providers, "models": {"smart": deployments}}
    out["routing"] = routing
    if plans:
        out["plans"] = plans
    return out


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def chat(gw: Any, key: str, **extra: Any) -> Any:
    return await gw.client.post("/v1/chat/completions", json={**CHAT, **extra}, headers=auth(key))


def breaker(gw: Any, deployment: str) -> dict[str, Any]:
    """One deployment's row of the breaker snapshot (closed if it was never seen)."""
    for row in gw.app.state.services.breakers.snapshot():
        if row["deployment"] == deployment:
            return dict(row)
    return {"deployment": deployment, "state": "closed", "failures": 0, "successes": 0}


async def published(gw: Any) -> None:
    """Wait until this instance has written its breaker changes to the shared store."""
    pending = list(gw.app.state.services.breakers._pending)
    await asyncio.gather(*pending)


def sse_frames(text: str) -> list[Any]:
    frames = []
    for block in text.split("\n\n"):
        if block.startswith("data: ") and block != "data: [DONE]":
            frames.append(orjson.loads(block[len("data: ") :]))
    return frames


async def trip_primary(gw: Any, key: str, a: Upstream, b: Upstream) -> None:
    """Three requests, each failing over from the failing primary: its breaker opens."""
    a.failing = 500
    for _ in range(3):
        r = await chat(gw, key)
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-model"] == FALLBACK
    assert breaker(gw, A_DEPLOYMENT)["state"] == "open"
    await published(gw)


# 1 ----------------------------------------------------------------------------------------
async def test_failover_then_breaker_skips_the_failing_primary(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.failing = 500
    for _ in range(10):
        b.reply_chat("from b", usage=oa.usage(1200, 300))
    # 1200 * 3 + 300 * 5 = 5100 per 1M tokens
    usd = "0.0051"
    async with make_gateway(config(a.base_url, b.base_url), env=ENV) as gw:
        key = await gw.tenant_key("t1")
        seen_a = []
        for _ in range(10):
            r = await chat(gw, key)
            assert r.status_code == 200, r.text
            assert r.headers["x-farebox-model"] == FALLBACK
            assert r.json()["choices"][0]["message"]["content"] == "from b"
            assert r.headers["x-farebox-cost-usd"] == usd
            seen_a.append(a.calls)
        # the primary is tried by the first three requests only, then skipped outright
        assert seen_a == [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
        assert a.calls == 3
        assert b.calls == 10
        assert all(req.json["model"] == FALLBACK for req in b.requests)
        assert all(req.headers["Authorization"] == "Bearer sk-upstream-b" for req in b.requests)
        state = breaker(gw, A_DEPLOYMENT)
        assert state["state"] == "open" and state["failures"] == 3
        assert breaker(gw, B_DEPLOYMENT)["state"] == "closed"
        rows = await gw.ledger("t1")
        assert len(rows) == 10
        for row in rows:
            assert row.status == "ok" and row.http_status == 200
            assert row.provider == "fallback" and row.model_served == FALLBACK
            assert row.model_requested == "smart"
            assert (row.input_tokens, row.output_tokens) == (1200, 300)
            assert row.cost == parse_usd(usd) == 1200 * 3_000_000 + 300 * 5_000_000


# 2 ----------------------------------------------------------------------------------------
async def test_half_open_probe_restores_the_primary(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    clock = Clock()
    async with make_gateway(config(a.base_url, b.base_url), env=ENV, clock=clock) as gw:
        key = await gw.tenant_key("t1")
        await trip_primary(gw, key, a, b)
        assert (a.calls, b.calls) == (3, 3)

        clock.advance(COOLDOWN_S - 1)  # still cooling down: skipped
        r = await chat(gw, key)
        assert r.headers["x-farebox-model"] == FALLBACK
        assert (a.calls, b.calls) == (3, 4)

        clock.advance(2)  # past the cooldown: half-open
        assert breaker(gw, A_DEPLOYMENT)["state"] == "half_open"
        a.failing = None  # the primary has recovered
        r = await chat(gw, key)
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-model"] == PRIMARY  # the probe
        assert (a.calls, b.calls) == (4, 4)
        assert breaker(gw, A_DEPLOYMENT)["state"] == "closed"
        await published(gw)
        assert A_DEPLOYMENT not in await gw.store.breakers()

        for _ in range(3):
            r = await chat(gw, key)
            assert r.status_code == 200 and r.headers["x-farebox-model"] == PRIMARY
        assert (a.calls, b.calls) == (7, 4)
        providers = [row.provider for row in await gw.ledger("t1")]
        assert providers == ["fallback"] * 4 + ["primary"] * 4


async def test_failed_probe_reopens_the_breaker(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    clock = Clock()
    async with make_gateway(config(a.base_url, b.base_url), env=ENV, clock=clock) as gw:
        key = await gw.tenant_key("t1")
        await trip_primary(gw, key, a, b)
        clock.advance(COOLDOWN_S + 1)
        r = await chat(gw, key)  # the probe goes to A, fails, B serves
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-model"] == FALLBACK
        assert (a.calls, b.calls) == (4, 4)
        state = breaker(gw, A_DEPLOYMENT)
        assert state["state"] == "open"
        assert state["open_until"] == pytest.approx(clock() + COOLDOWN_S)

        for _ in range(3):  # open for another full cooldown: A is not called again
            r = await chat(gw, key)
            assert r.headers["x-farebox-model"] == FALLBACK
        assert (a.calls, b.calls) == (4, 7)
        clock.advance(COOLDOWN_S - 1)
        await chat(gw, key)
        assert a.calls == 4


async def test_half_open_lets_exactly_one_probe_through(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    clock = Clock()
    async with make_gateway(config(a.base_url, b.base_url), env=ENV, clock=clock) as gw:
        key = await gw.tenant_key("t1")
        await trip_primary(gw, key, a, b)
        clock.advance(COOLDOWN_S + 1)
        responses = await asyncio.gather(*(chat(gw, key) for _ in range(6)))
        assert [r.status_code for r in responses] == [200] * 6
        assert a.calls == 4  # exactly one probe among six concurrent callers
        assert b.calls == 3 + 6
        assert breaker(gw, A_DEPLOYMENT)["state"] == "open"


# 3 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "client_status", "code"),
    [
        (400, 400, "upstream_rejected"),
        (422, 422, "upstream_rejected"),
        # 404 is an account problem (the model the gateway's account lacks): a 502, still final
        (404, 502, "upstream_error"),
    ],
)
async def test_client_errors_never_fail_over(
    make_gateway: Any, ups: tuple[Upstream, Upstream], status: int, client_status: int, code: str
) -> None:
    a, b = ups
    a.failing = status
    async with make_gateway(config(a.base_url, b.base_url, retries=1), env=ENV) as gw:
        key = await gw.tenant_key("t1")
        for _ in range(5):  # more than the breaker's threshold of 3
            r = await chat(gw, key)
            assert r.status_code == client_status, r.text
            assert r.json()["error"]["code"] == code
        assert a.calls == 5  # no retry round either
        assert b.calls == 0
        state = breaker(gw, A_DEPLOYMENT)
        assert state["state"] == "closed" and state["failures"] == 0
        assert await gw.store.breakers() == {}
        rows = await gw.ledger("t1")
        assert [(row.status, row.provider, row.http_status) for row in rows] == [
            ("error", "primary", status)
        ] * 5


# 4 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [{"retry-after-ms": "200"}, {"retry-after": "0.2"}])
async def test_429_with_retry_after_is_retried_after_waiting(
    make_gateway: Any, ups: tuple[Upstream, Upstream], header: dict[str, str]
) -> None:
    a, _ = ups
    a.reply_error(429, "Rate limit reached", type="rate_limit_error", headers=header)
    # no backoff of its own: any wait is the upstream's Retry-After
    async with make_gateway(config(a.base_url, retries=1, backoff_s=0.0), env=ENV) as gw:
        key = await gw.tenant_key("t1")
        started = time.monotonic()
        r = await chat(gw, key)
        elapsed = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-model"] == PRIMARY
        assert a.calls == 2
        assert elapsed >= 0.15
        state = breaker(gw, A_DEPLOYMENT)
        assert (state["state"], state["failures"], state["successes"]) == ("closed", 1, 1)
        [row] = await gw.ledger("t1")
        assert row.status == "ok"


async def test_retry_after_beyond_the_plan_timeout_is_not_waited_for(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, _ = ups
    a.reply_error(429, "Slow down", type="rate_limit_error", headers={"retry-after": "30"})
    plans = {"default": {"timeout_s": 2}}
    cfg = config(a.base_url, retries=3, backoff_s=0.0, plans=plans)
    async with make_gateway(cfg, env=ENV) as gw:
        key = await gw.tenant_key("t1")
        started = time.monotonic()
        r = await chat(gw, key)
        assert time.monotonic() - started < 1.0
        # the upstream's own rate limit reaches the client as a 429 its SDK will wait out
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "upstream_rate_limited"
        assert r.headers.get("retry-after") == "30"  # passed on so the client can wait
        assert a.calls == 1
        [row] = await gw.ledger("t1")
        assert (row.status, row.http_status) == ("error", 429)


# 5 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_529_overloaded_fails_over(
    make_gateway: Any, ups: tuple[Upstream, Upstream], stream: bool
) -> None:
    _, b = ups
    async with an.AnthropicUpstream() as claude:
        claude.reply_error(529, "overloaded_error", "Overloaded")
        if stream:
            b.reply_stream(["fall", "back"], usage=oa.usage(10, 2))
        else:
            b.reply_chat("fallback", usage=oa.usage(10, 2))
        cfg = config(claude.base_url, b.base_url, a_kind="anthropic")
        async with make_gateway(cfg, env=ENV) as gw:
            key = await gw.tenant_key("t1")
            extra: dict[str, Any] = {}
            if stream:
                extra = {"stream": True, "stream_options": {"include_usage": True}}
            r = await chat(gw, key, **extra)
            assert r.status_code == 200, r.text
            assert r.headers["x-farebox-model"] == FALLBACK
            assert claude.calls == 1 and claude.last.path == "/v1/messages"
            assert claude.last.json["model"] == PRIMARY
            assert b.calls == 1
            if stream:
                assert r.text.endswith("data: [DONE]\n\n")
                frames = sse_frames(r.text)
                text = "".join(
                    f["choices"][0]["delta"].get("content") or "" for f in frames if f["choices"]
                )
                assert text == "fallback"
            else:
                assert r.json()["choices"][0]["message"]["content"] == "fallback"
            state = breaker(gw, A_DEPLOYMENT)
            assert (state["state"], state["failures"]) == ("closed", 1)
            [row] = await gw.ledger("t1")
            assert (row.status, row.provider) == ("ok", "fallback")
            assert row.cost == 10 * 3_000_000 + 2 * 5_000_000


# 6 ----------------------------------------------------------------------------------------
async def test_mid_stream_failure_is_terminal_and_metered(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    # frames: role chunk, "Hello", " wor", "ld!", finish, usage, [DONE]; the link drops
    # after the first three
    a.reply_stream(["Hello", " wor", "ld!"], usage=oa.usage(9, 3), disconnect_after=3)
    async with make_gateway(config(a.base_url, b.base_url, retries=1), env=ENV) as gw:
        key = await gw.tenant_key("t1")
        r = await chat(gw, key, stream=True, stream_options={"include_usage": True})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-farebox-model"] == PRIMARY
        assert "[DONE]" not in r.text
        frames = sse_frames(r.text)
        *chunks, last = frames
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == "Hello wor"
        assert set(last) == {"error"}
        error = last["error"]
        assert error["message"] and error["type"] and error["code"]
        assert a.calls == 1
        assert b.calls == 0  # no failover after the first byte
        [row] = await gw.ledger("t1")
        assert row.status == "upstream_interrupted"
        assert row.provider == "primary" and row.stream is True
        assert row.usage_source == "estimated"
        assert row.output_tokens == 3  # 9 characters relayed, about 4 per token
        assert row.input_tokens > 0
        assert row.error_code == error["code"]
        assert row.cost == row.input_tokens * 1_000_000 + row.output_tokens * 2_000_000
        assert row.cost > 0


# 7 ----------------------------------------------------------------------------------------
async def test_breaker_state_is_shared_between_two_app_instances(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    clock = Clock()
    cfg = config(a.base_url, b.base_url)
    async with (
        make_gateway(cfg, env=ENV, clock=clock) as one,
        make_gateway(cfg, env=ENV, clock=clock) as two,
    ):
        key = await one.tenant_key("t1")
        await trip_primary(one, key, a, b)
        assert breaker(two, A_DEPLOYMENT)["state"] == "closed"  # not synced yet

        await two.app.state.services.breakers.sync()
        assert breaker(two, A_DEPLOYMENT)["state"] == "open"
        for _ in range(4):
            r = await chat(two, key)
            assert r.status_code == 200, r.text
            assert r.headers["x-farebox-model"] == FALLBACK
        assert (a.calls, b.calls) == (3, 7)  # instance two never paid for the primary

        # after the cooldown exactly one probe is sent, across both instances
        clock.advance(COOLDOWN_S + 1)
        a.failing = None
        both = await asyncio.gather(chat(one, key), chat(two, key))
        assert sorted(r.headers["x-farebox-model"] for r in both) == [FALLBACK, PRIMARY]
        assert a.calls == 4
        prober = one if both[0].headers["x-farebox-model"] == PRIMARY else two
        other = two if prober is one else one
        assert breaker(prober, A_DEPLOYMENT)["state"] == "closed"
        await published(prober)

        # the other instance adopts the close on its next sync
        await other.app.state.services.breakers.sync()
        assert breaker(other, A_DEPLOYMENT)["state"] == "closed"
        r = await chat(other, key)
        assert r.headers["x-farebox-model"] == PRIMARY
        assert a.calls == 5


# 8 ----------------------------------------------------------------------------------------
async def test_every_deployment_open_is_a_clear_503(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    a.failing = b.failing = 500
    async with make_gateway(config(a.base_url, b.base_url), env=ENV) as gw:
        key = await gw.tenant_key("t1")
        for _ in range(3):
            r = await chat(gw, key)
            assert r.status_code == 502, r.text
            assert r.json()["error"]["code"] == "upstream_error"
        assert (a.calls, b.calls) == (3, 3)
        assert breaker(gw, A_DEPLOYMENT)["state"] == "open"
        assert breaker(gw, B_DEPLOYMENT)["state"] == "open"

        started = time.monotonic()
        r = await chat(gw, key)
        assert time.monotonic() - started < 1.0
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "deployments_unavailable"
        assert "smart" in error["message"]
        assert r.headers["retry-after"] == "1"
        assert (a.calls, b.calls) == (3, 3)  # no upstream call at all
        rows = await gw.ledger("t1")
        assert [(row.status, row.http_status) for row in rows] == [("error", 500)] * 3


# probe bookkeeping ------------------------------------------------------------------------
async def test_an_unused_probe_claim_does_not_strand_the_fallback(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    clock = Clock()
    async with make_gateway(config(a.base_url, b.base_url), env=ENV, clock=clock) as gw:
        key = await gw.tenant_key("t1")
        a.failing = b.failing = 500
        for _ in range(3):
            await chat(gw, key)
        assert breaker(gw, B_DEPLOYMENT)["state"] == "open"
        await published(gw)

        clock.advance(COOLDOWN_S + 1)  # both half-open; both recovered
        a.failing = b.failing = None
        r = await chat(gw, key)
        assert r.headers["x-farebox-model"] == PRIMARY  # A's probe served it; B unused
        assert (a.calls, b.calls) == (4, 3)

        # later the primary fails again: the healthy fallback must take over
        a.failing = 500
        clock.advance(10 * COOLDOWN_S)
        await gw.app.state.services.breakers.sync()
        r = await chat(gw, key)
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-model"] == FALLBACK


async def test_a_sync_racing_the_publish_does_not_close_a_fresh_breaker(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    async with make_gateway(config(a.base_url, b.base_url), env=ENV) as gw:
        breakers = gw.app.state.services.breakers
        target = Target("primary", PRIMARY, Price.from_per_million(A_PRICE))
        for _ in range(3):  # what three failed calls record on the request path
            breakers.record(target, False)
        assert breaker(gw, A_DEPLOYMENT)["state"] == "open"
        await breakers.sync()  # the periodic sync happening to run right then
        assert breaker(gw, A_DEPLOYMENT)["state"] == "open"


async def test_a_cancelled_probe_does_not_strand_the_deployment(
    make_gateway: Any, ups: tuple[Upstream, Upstream]
) -> None:
    a, b = ups
    clock = Clock()
    async with make_gateway(config(a.base_url, b.base_url), env=ENV, clock=clock) as gw:
        key = await gw.tenant_key("t1")
        await trip_primary(gw, key, a, b)
        clock.advance(COOLDOWN_S + 1)
        a.failing, a.hang = None, True
        a.arrived.clear()
        stream = {"stream": True, "stream_options": {"include_usage": True}}
        probe = asyncio.create_task(chat(gw, key, **stream))
        await a.arrived.wait()  # the probe is in flight at A
        probe.cancel()  # the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert a.calls == 4

        a.hang = False  # A has recovered; many cooldowns later it must be probed again
        clock.advance(10 * COOLDOWN_S)
        r = await chat(gw, key)
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-model"] == PRIMARY


# mock provider fault injection ------------------------------------------------------------
def mock_config(flaky: dict[str, Any], *, healthy: bool = True) -> dict[str, Any]:
    providers: dict[str, Any] = {"flaky": {"kind": "mock", **flaky}}
    deployments = [{"provider": "flaky", "model": "gpt-4o-mini"}]
    if healthy:
        providers["healthy"] = {"kind": "mock"}
        deployments.append({"provider": "healthy", "model": "gpt-4.1-nano"})
    breaker_cfg = {"failures": 3, "cooldown_s": COOLDOWN_S, "sync_s": 3600.0}
    return {
        "providers": providers,
        "models": {"smart": deployments},
        "routing": {"retries": 0, "backoff_s": 0.0, "breaker": breaker_cfg},
    }


async def test_mock_fault_injection_drives_failover(make_gateway: Any) -> None:
    cfg = mock_config({"error_rate": 1.0, "error_statuses": [500, 503]})
    async with make_gateway(cfg) as gw:
        key = await gw.tenant_key("t1")
        costs = {}
        for _ in range(8):
            r = await chat(gw, key)
            assert r.status_code == 200, r.text
            assert r.headers["x-farebox-model"] == "gpt-4.1-nano"
            costs[r.headers["x-farebox-request-id"]] = parse_usd(r.headers["x-farebox-cost-usd"])
        flaky = breaker(gw, "flaky/gpt-4o-mini")
        assert (flaky["state"], flaky["failures"], flaky["successes"]) == ("open", 3, 0)
        healthy = breaker(gw, "healthy/gpt-4.1-nano")
        assert (healthy["state"], healthy["successes"]) == ("closed", 8)
        rows = await gw.ledger("t1")
        assert len(rows) == 8
        assert {(row.status, row.provider) for row in rows} == {("ok", "healthy")}
        assert {row.request_id: row.cost for row in rows} == costs
        assert all(cost > 0 for cost in costs.values())


async def test_mock_error_statuses_are_the_configured_ones(make_gateway: Any) -> None:
    cfg = mock_config({"error_rate": 1.0, "error_statuses": [500, 503]}, healthy=False)
    cfg["routing"]["breaker"]["failures"] = 100
    async with make_gateway(cfg) as gw:
        key = await gw.tenant_key("t1")
        statuses = []
        for n in range(12):
            r = await chat(gw, key, user=f"u{n}")
            assert r.status_code == 502, r.text
            statuses.append(r.json()["error"]["message"].rsplit(" ", 1)[-1])
        assert set(statuses) == {"500", "503"}
        rows = await gw.ledger("t1")
        assert sorted({row.http_status for row in rows}) == [500, 503]


async def test_mock_rate_limit_passes_retry_after(make_gateway: Any) -> None:
    cfg = mock_config({"rate_limit_rate": 1.0, "retry_after_s": 7}, healthy=False)
    async with make_gateway(cfg) as gw:
        key = await gw.tenant_key("t1")
        started = time.monotonic()
        r = await chat(gw, key)  # retries=0: no waiting, the hint goes to the client
        assert time.monotonic() - started < 1.0
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "upstream_rate_limited"
        assert r.headers["retry-after"] == "7"
        assert breaker(gw, "flaky/gpt-4o-mini")["failures"] == 1


async def test_mock_disconnect_is_an_interrupted_stream(make_gateway: Any) -> None:
    flaky = {
        "disconnect_rate": 1.0,
        "disconnect_after": 2,
        "output_tokens": {"distribution": "fixed", "mean": 20},
    }
    async with make_gateway(mock_config(flaky)) as gw:
        key = await gw.tenant_key("t1")
        r = await chat(gw, key, stream=True, stream_options={"include_usage": True})
        assert r.status_code == 200
        assert r.headers["x-farebox-model"] == "gpt-4o-mini"  # no failover after the first item
        frames = sse_frames(r.text)
        assert set(frames[-1]) == {"error"}
        assert "[DONE]" not in r.text
        [row] = await gw.ledger("t1")
        assert (row.status, row.provider, row.usage_source) == (
            "upstream_interrupted",
            "flaky",
            "estimated",
        )
        assert row.output_tokens > 0
