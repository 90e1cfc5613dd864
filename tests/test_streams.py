"""Streams: OpenAI-shaped SSE, usage stripping, cut-short streams metered and marked."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fakes import openai_upstream as oa
from farebox.core.money import format_usd
from farebox.gateway.auth import Principal
from farebox.gateway.pipeline import StreamReply

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def frames(text: str) -> list[Any]:
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [b[6:] if b == "data: [DONE]" else orjson.loads(b[6:]) for b in blocks]


async def test_stream_without_include_usage_strips_usage(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("t1")
        r = await gw.client.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        parsed = frames(r.text)
        assert parsed[-1] == "[DONE]"
        chunks = parsed[:-1]
        assert chunks and all("usage" not in c for c in chunks)
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        [entry] = await gw.ledger("t1")
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert entry.output_tokens == len(text.split())  # the mock's exact usage, not an estimate
        assert entry.usage_source == "provider" and entry.cost > 0


async def test_stream_with_include_usage_keeps_null_usage_and_final_chunk(
    make_gateway: Any,
) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("t1")
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        r = await gw.client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        chunks = frames(r.text)[:-1]
        assert all(c["usage"] is None for c in chunks[:-1])
        final = chunks[-1]
        assert final["choices"] == [] and final["usage"]["total_tokens"] > 0
        [entry] = await gw.ledger("t1")
        assert final["usage"]["prompt_tokens"] == entry.input_tokens
        assert final["usage"]["completion_tokens"] == entry.output_tokens


async def test_upstream_cut_mid_stream_is_metered_and_marked(make_gateway: Any) -> None:
    async with oa.OpenAIUpstream() as up:
        up.reply_stream(["Hello", " there", " friend"], usage=oa.usage(9, 3), disconnect_after=3)
        config = {"providers": {"up": {"kind": "openai", "base_url": up.base_url}}}
        async with make_gateway(config) as gw:
            key = await gw.tenant_key("t1")
            r = await gw.client.post(
                "/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers={"Authorization": f"Bearer {key}"},
            )
            parsed = frames(r.text)
            assert "[DONE]" not in parsed
            assert "error" in parsed[-1] and parsed[-1]["error"]["message"]
            [entry] = await gw.ledger("t1")
            assert entry.status == "upstream_interrupted"
            assert entry.usage_source == "estimated"
            assert entry.output_tokens >= 1 and entry.cost > 0


async def test_client_disconnect_meters_what_was_produced(make_gateway: Any) -> None:
    config = {
        "providers": {
            "sim": {"kind": "mock", "output_tokens": {"distribution": "fixed", "mean": 50}}
        }
    }
    async with make_gateway(config) as gw:
        await gw.tenant_key("t1")
        services = gw.app.state.services
        tenant = await gw.store.get_tenant("t1")
        [key] = await gw.store.list_keys("t1")
        who = Principal(tenant=tenant, key=key)
        reply = await services.gateway.chat(who, {**CHAT, "stream": True}, "req_disconnect")
        assert isinstance(reply, StreamReply)
        received = [await anext(reply.chunks) for _ in range(5)]  # role chunk + 4 words
        assert len(received) == 5
        await reply.chunks.aclose()  # what the SSE response does when the client goes away
        await services.ledger.flush()
        [entry] = await gw.ledger("t1")
        assert entry.request_id == "req_disconnect"
        assert entry.status == "client_disconnected"
        assert entry.usage_source == "estimated"
        assert 1 <= entry.output_tokens < 50


async def test_upstream_without_usage_gets_an_estimated_usage_chunk(make_gateway: Any) -> None:
    async with oa.OpenAIUpstream() as up:
        up.reply_stream(["Hello", " world"], usage=None)
        config = {"providers": {"up": {"kind": "openai", "base_url": up.base_url}}}
        async with make_gateway(config) as gw:
            key = await gw.tenant_key("t1")
            body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
            r = await gw.client.post(
                "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            parsed = frames(r.text)
            assert parsed[-1] == "[DONE]"
            final = parsed[-2]
            assert final["choices"] == [] and final["object"] == "chat.completion.chunk"
            [entry] = await gw.ledger("t1")
            assert entry.usage_source == "estimated" and entry.status == "ok"
            assert final["usage"]["completion_tokens"] == entry.output_tokens > 0
            assert final["usage"]["farebox_cost_usd"] == format_usd(entry.cost)


async def test_usage_on_the_last_content_chunk_is_billed_exactly(make_gateway: Any) -> None:
    async with oa.OpenAIUpstream() as up:
        chunks = list(oa.stream_chunks(["Hi", "!"]))
        chunks[-1] = {**chunks[-1], "usage": oa.usage(40, 7)}  # usage beside choices
        up.push(oa.Reply(frames=[oa.frame(c) for c in chunks] + [oa.frame("[DONE]")]))
        config = {"providers": {"up": {"kind": "openai", "base_url": up.base_url}}}
        async with make_gateway(config) as gw:
            key = await gw.tenant_key("t1")
            r = await gw.client.post(
                "/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert frames(r.text)[-1] == "[DONE]"
            [entry] = await gw.ledger("t1")
            assert entry.usage_source == "provider"
            assert (entry.input_tokens, entry.output_tokens) == (40, 7)
            assert entry.cost == 40 * 150_000 + 7 * 600_000


@pytest.mark.parametrize(
    "metadata",
    [
        "[" * 600 + "]" * 600,  # deeper than the JSON encoder allows
        '{"a":' * 40 + "1" + "}" * 40,  # an object, but nested too deep
        '{"a": "' + "x" * 5000 + '"}',  # too large
        '"just a string"',
    ],
)
async def test_unencodable_metadata_is_refused_and_never_poisons_the_ledger(
    make_gateway: Any, metadata: str
) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("t1")
        auth = {"Authorization": f"Bearer {key}"}
        bad = await gw.client.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={**auth, "X-Farebox-Metadata": metadata},
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "X-Farebox-Metadata"
        good = await gw.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert good.status_code == 200
        assert [e.request_id for e in await gw.ledger("t1")] == [
            good.headers["x-farebox-request-id"]
        ]
