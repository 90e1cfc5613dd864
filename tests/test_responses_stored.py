"""Issue [10]: stored responses and ``previous_response_id``, through the official ``openai``
SDK (in process, over an ASGI transport).

A three-turn chain sends the whole history upstream (to an OpenAI-format fake, to the mock,
and to an Anthropic-format fake, streamed turns included), and the history's input tokens are
metered; ``store=False`` answers cannot be continued; another tenant's id, an expired one and
a deleted one are all 404, exactly like an unknown id; ``GET``, ``DELETE`` and
``input_items`` show what was stored.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import openai
import pytest

from fakes import openai_upstream as oa
from fakes.anthropic_upstream import AnthropicUpstream, text_block, usage
from farebox.config.limits import ResponsesSettings
from farebox.config.settings import parse_settings
from farebox.core.money import parse_usd
from farebox.errors import ConfigError
from tests.claude_deployment import claude_gateway

PLANS: dict[str, Any] = {"pro": {"models": ["*"]}}
DAY = 86_400.0


def _openai(gw: Any, key: str) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gw.app))
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://gateway/v1", http_client=http, max_retries=0
    )


def _texts(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in messages]


def _joined(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


async def _streamed(client: openai.AsyncOpenAI, **kwargs: Any) -> Any:
    stream = await client.responses.create(stream=True, **kwargs)
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    return events[-1].response


async def test_three_turn_chain_sends_the_whole_history_upstream(make_gateway: Any) -> None:
    async with oa.OpenAIUpstream() as up:
        config = {"providers": {"up": {"kind": "openai", "base_url": up.base_url}}}
        async with make_gateway(config) as gw:
            client = _openai(gw, await gw.tenant_key("acme"))
            up.reply_chat("Hello Ann.", usage=oa.usage(10, 3))
            first = await client.responses.create(
                model="gpt-4o-mini", instructions="Be brief.", input="I am Ann."
            )
            assert first.store is True and first.previous_response_id is None
            up.reply_stream(["Nice ", "day."], usage=oa.usage(20, 2))
            second = await _streamed(
                client, model="gpt-4o-mini", input="Weather?", previous_response_id=first.id
            )
            assert second.previous_response_id == first.id
            up.reply_chat("Ann.", usage=oa.usage(30, 1))
            third = await client.responses.create(
                model="gpt-4o-mini",
                instructions="Answer in one word.",
                input=[{"role": "user", "content": [{"type": "input_text", "text": "Name?"}]}],
                previous_response_id=second.id,
            )
            assert third.output_text == "Ann." and third.previous_response_id == second.id
            sent = [r.json["messages"] for r in up.requests]
            assert _texts(sent[1]) == [
                ("user", "I am Ann."), ("assistant", "Hello Ann."), ("user", "Weather?")
            ]  # fmt: skip
            # the instructions of earlier turns are not carried over (as with OpenAI)
            assert _texts(sent[2]) == [
                ("system", "Answer in one word."), ("user", "I am Ann."),
                ("assistant", "Hello Ann."), ("user", "Weather?"), ("assistant", "Nice day."),
                ("user", [{"type": "text", "text": "Name?"}]),
            ]  # fmt: skip
            entries = await gw.ledger("acme")
            assert [e.endpoint for e in entries] == ["responses"] * 3
            assert [e.input_tokens for e in entries] == [10, 20, 30]


@pytest.mark.parametrize("before", [True, False], ids=["before-reply", "beside-reply"])
async def test_chain_on_the_mock_meters_the_history_as_input(
    make_gateway: Any, before: bool
) -> None:
    config = {"plans": PLANS, "responses": {"store_before_reply": before}}
    async with make_gateway(config) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        city = {"type": "object", "properties": {"city": {"type": "string"}}}
        tool = {"type": "function", "name": "get_weather", "parameters": city}
        first = await client.responses.create(
            model="gpt-4o-mini", input="Weather in Oslo? " * 20, tools=[tool],
            tool_choice="required",
        )  # fmt: skip
        (call,) = [item for item in first.output if item.type == "function_call"]
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "21 C"}
        second = await client.responses.create(
            model="gpt-4o-mini", input=[output], tools=[tool], previous_response_id=first.id
        )
        third = await _streamed(
            client, model="gpt-4o-mini", input="Thanks!", previous_response_id=second.id
        )
        assert second.output_text and third.output_text
        entries = await gw.ledger("acme")
        tokens = [e.input_tokens for e in entries]
        assert tokens[0] > 20 and tokens[0] < tokens[1] < tokens[2]
        for entry, response in zip(entries, (first, second, third), strict=True):
            assert response.usage is not None
            assert entry.input_tokens == response.usage.input_tokens
            assert entry.cost == parse_usd(response.usage.model_extra["farebox_cost_usd"])


async def test_chain_on_an_anthropic_deployment(make_gateway: Any) -> None:
    async with AnthropicUpstream() as claude:
        async with claude_gateway(make_gateway, claude, PLANS) as gw:
            client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
            claude.reply_message([text_block("Hello Ann.")], usage=usage(10, 3))
            first = await client.responses.create(model="smart", input="I am Ann.")
            claude.reply_stream(["Nice ", "day."], start_usage=usage(20, 1))
            second = await _streamed(
                client, model="smart", input="Weather?", previous_response_id=first.id
            )
            claude.reply_message([text_block("Ann.")], usage=usage(30, 1))
            third = await client.responses.create(
                model="smart", input="Name?", previous_response_id=second.id
            )
            assert third.output_text == "Ann."
            sent = claude.last.json["messages"]
            texts = [(m["role"], _joined(m["content"])) for m in sent]
            assert texts == [
                ("user", "I am Ann."), ("assistant", "Hello Ann."), ("user", "Weather?"),
                ("assistant", "Nice day."), ("user", "Name?"),
            ]  # fmt: skip


async def test_store_false_is_not_kept_and_cannot_be_continued(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        plain = await client.responses.create(model="gpt-4o-mini", input="Hi", store=False)
        streamed = await _streamed(client, model="gpt-4o-mini", input="Hi", store=False)
        assert plain.store is False and streamed.store is False
        for response_id in (plain.id, streamed.id):
            with pytest.raises(openai.NotFoundError) as caught:
                await client.responses.create(
                    model="gpt-4o-mini", input="More", previous_response_id=response_id
                )
            error = caught.value.body
            assert isinstance(error, dict) and response_id in error["message"]
            assert error["param"] == "previous_response_id" and error["code"] == "not_found"
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(response_id)
        assert len(await gw.ledger("acme")) == 2  # the refused continuations cost nothing


async def test_another_tenant_cannot_continue_read_or_delete(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        alice = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        bob = _openai(gw, await gw.tenant_key("globex", plan="pro"))
        mine = await alice.responses.create(model="gpt-4o-mini", input="Secret plan")
        unknown = "resp_" + "0" * 24
        answers = []
        for response_id in (mine.id, unknown):
            messages = []
            for attempt in (
                bob.responses.create(
                    model="gpt-4o-mini", input="Go on", previous_response_id=response_id
                ),
                bob.responses.retrieve(response_id),
                bob.responses.delete(response_id),
                bob.responses.input_items.list(response_id),
            ):
                with pytest.raises(openai.NotFoundError) as caught:
                    await attempt
                assert "Secret" not in str(caught.value.body)
                messages.append(str(caught.value.body).replace(response_id, "ID"))
            answers.append(messages)
        assert answers[0] == answers[1]  # another tenant's id reads exactly as an unknown one
        kept = await alice.responses.retrieve(mine.id)
        assert kept.output_text == mine.output_text
        assert await gw.ledger("globex") == []


async def test_expired_responses_are_gone(make_gateway: Any) -> None:
    now = [1_793_577_600.0]
    config = {"plans": PLANS, "responses": {"ttl_days": 2}}
    async with make_gateway(config, clock=lambda: now[0]) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        first = await client.responses.create(model="gpt-4o-mini", input="Hi")
        now[0] += 2 * DAY - 1
        second = await client.responses.create(
            model="gpt-4o-mini", input="Again", previous_response_id=first.id
        )
        now[0] += 2
        for call in (
            client.responses.create(model="gpt-4o-mini", input="x", previous_response_id=first.id),
            client.responses.retrieve(first.id),
            client.responses.input_items.list(first.id),
            client.responses.delete(first.id),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        assert (await client.responses.retrieve(second.id)).id == second.id  # younger: kept
        store = gw.app.state.services.store.responses
        assert await store.purge(now[0]) == 1  # the first, expired
        assert await store.purge(now[0] + 2 * DAY) == 1  # the second, in its turn


async def test_get_delete_and_input_items(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        key = await gw.tenant_key("acme", plan="pro")
        client = _openai(gw, key)
        first = await client.responses.create(
            model="gpt-4o-mini", input="One", instructions="Be kind.", metadata={"t": "1"}
        )
        second = await client.responses.create(
            model="gpt-4o-mini", input="Two", previous_response_id=first.id
        )
        got = await client.responses.retrieve(second.id)
        assert got.id == second.id and got.object == "response" and got.status == "completed"
        assert got.output_text == second.output_text and got.usage == second.usage
        assert got.previous_response_id == first.id and got.created_at == second.created_at
        again = await client.responses.retrieve(first.id)
        assert again.instructions == "Be kind." and again.metadata == {"t": "1"}

        page = await client.responses.input_items.list(second.id, order="asc")
        kinds = [(item.type, getattr(item, "role", None)) for item in page.data]
        assert kinds == [("message", "user"), ("message", "assistant"), ("message", "user")]
        assert page.data[0].content[0].text == "One"
        assert page.data[1].content[0].text == first.output_text
        assert page.data[2].content[0].type == "input_text"
        newest = await client.responses.input_items.list(second.id, limit=1)
        assert [i.id for i in newest.data] == [page.data[2].id] and newest.has_more
        rest = await client.responses.input_items.list(
            second.id, order="asc", after=page.data[0].id
        )
        assert [i.id for i in rest.data] == [i.id for i in page.data[1:]] and not rest.has_more

        headers = {"Authorization": f"Bearer {key}"}
        r = await gw.client.delete(f"/v1/responses/{first.id}", headers=headers)
        assert r.status_code == 200
        assert r.json() == {"id": first.id, "object": "response", "deleted": True}
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        r = await gw.client.delete(f"/v1/responses/{first.id}", headers=headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # the continuation kept its own copy of the history
        assert len((await client.responses.input_items.list(second.id)).data) == 3


async def test_stored_endpoints_refuse_bad_requests_cleanly(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        key = await gw.tenant_key("acme", plan="pro")
        client = _openai(gw, key)
        kept = await client.responses.create(model="gpt-4o-mini", input="One")
        headers = {"Authorization": f"Bearer {key}"}
        base = f"/v1/responses/{kept.id}"
        cases = [
            ("GET", base, {}, 401),
            ("POST", base, headers, 405),
            ("DELETE", base + "/input_items", headers, 405),
            ("GET", base + "/other", headers, 404),
            ("GET", base + "/input_items?limit=0", headers, 400),
            ("GET", base + "/input_items?order=up", headers, 400),
            ("GET", base + "/input_items?after=nope", headers, 400),
        ]
        for method, path, sent, status in cases:
            r = await gw.client.request(method, path, headers=sent)
            assert r.status_code == status, (method, path, r.text)
            assert r.json()["error"]["message"]
        r = await gw.client.get(base + "/", headers=headers)  # a trailing slash is the same
        assert r.status_code == 200 and r.json()["id"] == kept.id


async def test_a_store_that_fails_does_not_fail_the_answer(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(stored: Any) -> None:
        raise OSError("disk full")

    async with make_gateway({"plans": PLANS}) as gw:
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        monkeypatch.setattr(gw.app.state.services.store.responses, "put", broken)
        plain = await client.responses.create(model="gpt-4o-mini", input="Hi")
        streamed = await _streamed(client, model="gpt-4o-mini", input="Hi")
        assert plain.output_text and streamed.output_text
        for response_id in (plain.id, streamed.id):
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(response_id)  # waits for the failed write
        assert caplog.text.count("could not be stored; it cannot be continued") == 2


async def test_expired_responses_are_purged_in_the_background(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from farebox.api import responses_stored
    from farebox.stores.memory.responses import MemoryResponses

    purged = asyncio.Event()
    calls: list[float] = []

    class Spy(MemoryResponses):
        async def purge(self, now: float) -> int:
            calls.append(now)
            purged.set()
            return await super().purge(now)

    monkeypatch.setattr(responses_stored, "PURGE_EVERY_S", 0.0)
    kept = responses_stored.StoredResponses(Spy(), ResponsesSettings(), lambda: 1_000.0)
    kept.start()
    try:
        await asyncio.wait_for(purged.wait(), 10)
    finally:
        await kept.stop()
    assert calls[0] == 1_000.0


async def test_the_stored_endpoints_are_documented(make_gateway: Any) -> None:
    from openapi_spec_validator import validate

    async with make_gateway() as gw:
        document = (await gw.client.get("/openapi.json", headers=gw.admin)).json()
        validate(document)
        paths = document["paths"]
        one = paths["/v1/responses/{response_id}"]
        assert {"get", "delete"} <= set(one) and "404" in one["delete"]["responses"]
        items = paths["/v1/responses/{response_id}/input_items"]["get"]
        assert [p["name"] for p in items["parameters"]] == ["limit", "order", "after"]


async def test_input_caps_see_the_history(make_gateway: Any) -> None:
    plans = {"capped": {"models": ["*"], "max_input_chars": 1500}}
    async with make_gateway({"plans": plans}) as gw:
        client = _openai(gw, await gw.tenant_key("c", plan="capped"))
        first = await client.responses.create(model="gpt-4o-mini", input="a" * 1000)
        with pytest.raises(openai.BadRequestError) as big:
            await client.responses.create(
                model="gpt-4o-mini", input="b" * 1000, previous_response_id=first.id
            )
        assert big.value.code == "input_too_large" and big.value.param == "input"
        alone = await client.responses.create(model="gpt-4o-mini", input="b" * 1000)
        assert alone.status == "completed"
        assert len(await gw.ledger("c")) == 2  # the refused continuation cost nothing


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"ttl_days": 0}, ["responses.ttl_days", "greater than 0"]),
        ({"ttl_days": "soon"}, ["responses.ttl_days"]),
        ({"ttl": 3}, ["responses.ttl"]),
    ],
)
def test_the_responses_section_is_validated(
    tmp_path: Any, section: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"responses": section}, source="gw.yaml", env={}, base_dir=tmp_path)
    for word in words:
        assert word in info.value.message, info.value.message
    assert "gw.yaml" in info.value.message
    default = parse_settings({}, source="gw.yaml", env={}, base_dir=tmp_path)
    assert default.file.responses.ttl_days == 30


def _stored_slowly(release: asyncio.Event, settings: ResponsesSettings) -> tuple[Any, Any]:
    """Stored responses over a memory store whose writes wait for ``release``: (kept, store)."""
    from farebox.api.responses_stored import StoredResponses
    from farebox.stores.memory.responses import MemoryResponses

    class Slow(MemoryResponses):
        async def put(self, stored: Any) -> None:
            await release.wait()
            await super().put(stored)

    store = Slow()
    return StoredResponses(store, settings, lambda: 1_000.0), store


REPLY_BODY = b'{"id": "resp_1", "object": "response", "model": "m", "output": [], "usage": {}}'


async def test_not_before_the_reply_the_reply_does_not_wait_but_a_read_does() -> None:
    from farebox.gateway.render import Reply

    release = asyncio.Event()
    kept, _ = _stored_slowly(release, ResponsesSettings(store_before_reply=False))
    reply = Reply(REPLY_BODY, {})
    items = [{"role": "user", "content": "hi"}]
    assert await kept.keep(reply, "resp_1", "acme", items) is reply  # not waiting for put
    reader = asyncio.ensure_future(kept.find("acme", "resp_1"))
    await asyncio.sleep(0)  # let the reader start: it must now be waiting for the write
    assert not reader.done()
    release.set()
    found = await reader
    assert found.input == [{"role": "user", "content": "hi"}] and found.created_at == 1_000.0
    await kept.stop()


async def test_before_the_reply_the_reply_waits_for_the_write() -> None:
    from farebox.gateway.render import Reply

    release = asyncio.Event()
    kept, store = _stored_slowly(release, ResponsesSettings())
    keeping = asyncio.ensure_future(kept.keep(Reply(REPLY_BODY, {}), "resp_1", "acme", []))
    await asyncio.sleep(0)  # one turn: the reply is now waiting for the write
    assert not keeping.done()
    release.set()
    await keeping
    assert await store.get("acme", "resp_1", 1_000.0) is not None
    await kept.stop()
