"""Issue [12]: the response cache as a stage of the request path: hits on every chat format,
the request headers that steer it, partitions, and plans that cache nothing."""

from __future__ import annotations

from typing import Any

import httpx

from farebox.core.cache import BYPASS, HIT_EXACT, HIT_STATUS, MISS
from tests.cache_gateway import (
    MODEL,
    CountingMock,
    ask,
    config,
    post,
    sse_data,
    streamed_text,
    text_of,
)


async def test_a_repeated_question_is_answered_from_the_cache(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        first = await post(gw, key, ask())
        assert first.status_code == 200, first.text
        assert first.headers["x-farebox-cache"] == MISS
        again = await post(gw, key, ask())
        assert again.status_code == 200, again.text
        assert again.headers["x-farebox-cache"] == HIT_EXACT
        assert again.headers["x-farebox-cost-usd"] == "0.00"
        assert again.headers["x-farebox-model"] == first.headers["x-farebox-model"]
        assert again.headers["x-farebox-budget-remaining-usd"] == "unlimited"
        assert "x-farebox-cache-similarity" not in again.headers
        assert mock.chats == 1  # the hit never reached the provider
        assert text_of(again) == text_of(first)
        body = again.json()
        rid = again.headers["x-farebox-request-id"]
        assert body["id"] == "chatcmpl-" + rid.removeprefix("req_") != first.json()["id"]
        assert body["usage"]["prompt_tokens"] == first.json()["usage"]["prompt_tokens"]
        assert body["usage"]["farebox_cost_usd"] == "0.00"
        miss, hit = await gw.ledger("acme")
        assert (miss.status, miss.cache, miss.saved) == ("ok", MISS, 0)
        assert (hit.status, hit.cache, hit.http_status) == (HIT_STATUS, HIT_EXACT, 200)
        assert (hit.cost, hit.saved, hit.revenue) == (0, miss.cost, miss.revenue)
        assert hit.input_tokens == hit.output_tokens == 0
        assert hit.model_served == miss.model_served and hit.provider == miss.provider


async def test_a_plan_that_caches_nothing_is_untouched(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="plain")
        for _ in range(2):
            r = await post(gw, key, ask())
            assert r.status_code == 200 and "x-farebox-cache" not in r.headers
        assert mock.chats == 2
        assert [e.cache for e in await gw.ledger("acme")] == [None, None]
    async with make_gateway(config({"plain": {"models": ["*"]}})) as gw:
        assert gw.app.state.services.gateway.cache is None  # no plan caches: no cache at all
        assert gw.app.state.services.cache is None


async def test_no_cache_stores_and_no_store_does_neither(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        r = await post(gw, key, ask(), **{"Cache-Control": "no-store"})
        assert r.headers["x-farebox-cache"] == BYPASS
        r = await post(gw, key, ask())
        assert r.headers["x-farebox-cache"] == MISS  # no-store stored nothing
        r = await post(gw, key, ask("other"), **{"Cache-Control": "no-cache"})
        assert r.headers["x-farebox-cache"] == BYPASS
        fresh = await post(gw, key, ask("other"), **{"Cache-Control": "no-cache"})
        assert fresh.headers["x-farebox-cache"] == BYPASS  # looked nothing up: a new answer
        assert text_of(fresh) != text_of(r)
        hit = await post(gw, key, ask("other"))
        assert hit.headers["x-farebox-cache"] == HIT_EXACT  # no-cache stored its answer
        assert text_of(hit) == text_of(fresh)
        hit = await post(gw, key, ask(), **{"Cache-Control": "max-age=0, private"})
        assert hit.headers["x-farebox-cache"] == HIT_EXACT  # other directives change nothing
        assert mock.chats == 4
        ledger = await gw.ledger("acme")
        assert [e.cache for e in ledger] == [BYPASS, MISS, BYPASS, BYPASS, HIT_EXACT, HIT_EXACT]


async def test_the_ttl_header_shortens_the_plans_and_never_lengthens_it(
    make_gateway: Any,
) -> None:
    clock = {"now": 1_800_000_000.0}
    plans = {"cached": {"models": ["*"], "cache": {"mode": "exact", "ttl_s": 60}}}
    async with make_gateway(config(plans), clock=lambda: clock["now"]) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        await post(gw, key, ask("short"), **{"x-farebox-cache-ttl": "5"})
        await post(gw, key, ask("long"), **{"x-farebox-cache-ttl": "100000"})
        clock["now"] += 4
        assert (await post(gw, key, ask("short"))).headers["x-farebox-cache"] == HIT_EXACT
        clock["now"] += 2  # 6 s: past the 5 s asked for
        assert (await post(gw, key, ask("short"))).headers["x-farebox-cache"] == MISS
        assert (await post(gw, key, ask("long"))).headers["x-farebox-cache"] == HIT_EXACT
        clock["now"] += 55  # 61 s: past the plan's 60 s, though the header asked for more
        assert (await post(gw, key, ask("long"))).headers["x-farebox-cache"] == MISS


async def test_namespaces_and_plan_partitions_keep_entries_apart(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        other = await gw.tenant_key("globex", plan="cached")
        await post(gw, key, ask())
        assert (await post(gw, other, ask())).headers["x-farebox-cache"] == MISS
        space = {"X-Farebox-Cache-Namespace": "support|n:x%"}
        assert (await post(gw, key, ask(), **space)).headers["x-farebox-cache"] == MISS
        assert (await post(gw, key, ask(), **space)).headers["x-farebox-cache"] == HIT_EXACT
        assert (await post(gw, key, ask())).headers["x-farebox-cache"] == HIT_EXACT
        # per key: a second key of the same tenant has entries of its own
        await gw.tenant("initech", plan="by_key")
        k1, k2 = await gw.key("initech"), await gw.key("initech")
        await post(gw, k1, ask())
        assert (await post(gw, k2, ask())).headers["x-farebox-cache"] == MISS
        assert (await post(gw, k1, ask())).headers["x-farebox-cache"] == HIT_EXACT
        # per user: the X-Farebox-User header or the body's user
        users = await gw.tenant_key("umbrella", plan="by_user")
        await post(gw, users, ask(user="alice"))
        hit = await post(gw, users, ask(), **{"X-Farebox-User": "alice"})
        assert hit.headers["x-farebox-cache"] == HIT_EXACT
        assert (await post(gw, users, ask(user="bob"))).headers["x-farebox-cache"] == MISS
        # OpenAI's safety_identifier names the end user too; no user at all: never pooled
        await post(gw, users, ask(safety_identifier="carol"))
        dave = await post(gw, users, ask(safety_identifier="dave"))
        assert dave.headers["x-farebox-cache"] == MISS
        carol = await post(gw, users, ask(safety_identifier="carol"))
        assert carol.headers["x-farebox-cache"] == HIT_EXACT
        for _ in range(2):
            assert (await post(gw, users, ask())).headers["x-farebox-cache"] == BYPASS
        assert mock.chats == 11


async def answered_then_hit(
    gw: Any, key: str, body: dict[str, Any], path: str
) -> tuple[httpx.Response, httpx.Response]:
    """POST ``body`` to ``path`` twice: answered, then an exact hit; the two responses."""
    first = await post(gw, key, body, path)
    assert first.status_code == 200, first.text
    hit = await post(gw, key, body, path)
    assert hit.headers["x-farebox-cache"] == HIT_EXACT
    return first, hit


async def test_anthropic_messages_hit_in_their_own_format(make_gateway: Any) -> None:
    mock = CountingMock()
    body = {"model": MODEL, "max_tokens": 64, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Name a colour."}]}  # fmt: skip
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        first, hit = await answered_then_hit(gw, key, body, "/v1/messages")
        assert hit.json()["type"] == "message" and hit.json()["content"] == first.json()["content"]
        assert hit.json()["id"] != first.json()["id"]
        assert hit.json()["usage"]["output_tokens"] == first.json()["usage"]["output_tokens"]
        # the same question in OpenAI format is another client's format: its own entry
        messages = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Name a colour."}]  # fmt: skip
        chat = {"model": MODEL, "max_tokens": 64, "messages": messages}
        assert (await post(gw, key, chat)).headers["x-farebox-cache"] == MISS
        streamed = await post(gw, key, {**body, "stream": True}, "/v1/messages")
        assert streamed.headers["x-farebox-cache"] == HIT_EXACT
        assert "event: message_stop" in streamed.text
        assert mock.chats == 2


async def test_responses_hit_and_continuations_key_on_the_whole_conversation(
    make_gateway: Any,
) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        fact = {"model": MODEL, "input": "Tell me a fact."}
        first, hit = await answered_then_hit(gw, key, fact, "/v1/responses")
        assert hit.json()["output"][0]["content"] == first.json()["output"][0]["content"]
        assert hit.json()["usage"]["farebox_cost_usd"] == "0.00"
        assert hit.json()["id"] != first.json()["id"]
        other = await post(gw, key, {"model": MODEL, "input": "Another one."}, "/v1/responses")
        follow = {"model": MODEL, "input": "And why?", "previous_response_id": first.json()["id"]}
        r = await post(gw, key, follow, "/v1/responses")
        assert r.headers["x-farebox-cache"] == MISS
        # the same conversation, continued from the hit (which stored the same history)
        again = {**follow, "previous_response_id": hit.json()["id"]}
        r2 = await post(gw, key, again, "/v1/responses")
        assert r2.headers["x-farebox-cache"] == HIT_EXACT
        assert [o["content"] for o in r2.json()["output"]] == [
            o["content"] for o in r.json()["output"]
        ]
        # the same new input after another conversation is another request
        elsewhere = {**follow, "previous_response_id": other.json()["id"]}
        assert (await post(gw, key, elsewhere, "/v1/responses")).headers["x-farebox-cache"] == MISS
        # a field beyond the conversation (instructions) is part of the key
        told = {"model": MODEL, "input": "Tell me a fact.", "instructions": "Be terse."}
        assert (await post(gw, key, told, "/v1/responses")).headers["x-farebox-cache"] == MISS
        assert mock.chats == 5


async def test_a_streamed_hit_is_replayed_as_a_stream(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        streamed = ask(stream=True, stream_options={"include_usage": True})
        first = await post(gw, key, streamed)
        assert first.headers["x-farebox-cache"] == MISS
        whole = await post(gw, key, ask())  # a streamed answer, stored, serves a whole one
        assert whole.headers["x-farebox-cache"] == HIT_EXACT
        assert text_of(whole) == streamed_text(first.text)
        replayed = await post(gw, key, streamed)
        assert replayed.headers["x-farebox-cache"] == HIT_EXACT
        assert streamed_text(replayed.text) == streamed_text(first.text)
        chunks = sse_data(replayed.text)
        assert chunks[-1] == "[DONE]"
        usage = chunks[-2]["usage"]
        assert usage["farebox_cost_usd"] == "0.00"
        assert usage["completion_tokens"] == sse_data(first.text)[-2]["usage"]["completion_tokens"]
        finish = [c["choices"][0]["finish_reason"] for c in chunks[:-2] if c["choices"]]
        assert finish[-1] in ("stop", "length") and not any(finish[:-1])
        plain = await post(gw, key, ask(stream=True))  # no usage chunk unless asked for
        assert all(isinstance(c, str) or "usage" not in c for c in sse_data(plain.text))
        assert mock.chats == 1


async def test_a_hit_takes_nothing_from_a_budget_and_says_what_is_left(
    make_gateway: Any,
) -> None:
    plans = {"budgeted": {"models": ["*"], "cache": {"mode": "exact"},
                          "budgets": [{"period": "day", "limit_usd": "1"}]}}  # fmt: skip
    async with make_gateway(config(plans)) as gw:
        key = await gw.tenant_key("acme", plan="budgeted")
        first = await post(gw, key, ask())
        left = first.headers["x-farebox-budget-remaining-usd"]
        assert left != "unlimited"
        for _ in range(2):
            hit = await post(gw, key, ask())
            assert hit.headers["x-farebox-cache"] == HIT_EXACT
            assert hit.headers["x-farebox-budget-remaining-usd"] == left
        r = await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        budget = r.json()["budgets"][0]
        assert budget["remaining_usd"] == left and budget["reserved_usd"] in ("0", "0.00")


async def test_legacy_completions_hit_whole_and_streamed(make_gateway: Any) -> None:
    mock = CountingMock()
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 30}
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        first, hit = await answered_then_hit(gw, key, body, "/v1/completions")
        assert hit.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
        streamed = await post(gw, key, {**body, "stream": True}, "/v1/completions")
        assert streamed.headers["x-farebox-cache"] == HIT_EXACT
        chunks = [c for c in sse_data(streamed.text) if isinstance(c, dict)]
        assert (
            "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
            == (first.json()["choices"][0]["text"])
        )
        assert mock.chats == 1


async def test_a_responses_stream_replays_a_cached_answer(make_gateway: Any) -> None:
    mock = CountingMock()
    body = {"model": MODEL, "input": "Tell me a fact.", "stream": True}
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        first = await post(gw, key, body, "/v1/responses")
        assert first.headers["x-farebox-cache"] == MISS
        hit = await post(gw, key, body, "/v1/responses")
        assert hit.headers["x-farebox-cache"] == HIT_EXACT
        events = [e for e in sse_data(hit.text) if isinstance(e, dict)]
        done = [e for e in events if e["type"] == "response.completed"]
        assert len(done) == 1 and done[0]["response"]["usage"]["farebox_cost_usd"] == "0.00"
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        live = [e for e in sse_data(first.text) if isinstance(e, dict)]
        assert text == "".join(
            e["delta"] for e in live if e["type"] == "response.output_text.delta"
        )
        stored = await gw.client.get(
            f"/v1/responses/{done[0]['response']['id']}", headers={"Authorization": f"Bearer {key}"}
        )
        assert stored.status_code == 200  # a hit is kept like any answer (store defaults to on)
        assert mock.chats == 1
