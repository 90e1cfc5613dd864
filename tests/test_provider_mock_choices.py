"""The mock honours ``n``, ``logprobs``/``top_logprobs`` and ``dimensions`` as OpenAI does,
within OpenAI's limits, and answers the upstream 400 beyond them."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from fakes.request_schemas import validator
from farebox.catalog import load_catalog
from farebox.errors import UpstreamRejected
from farebox.providers.base import ChatRequest, EmbedRequest, UsageReport
from farebox.providers.mock import MockOptions, MockProvider

FIXED = MockOptions(seed=5, distribution="fixed", mean_tokens=6)


def chat(**extra: Any) -> ChatRequest:
    return ChatRequest(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], **extra}
    )


def embed(**extra: Any) -> EmbedRequest:
    return EmbedRequest({"model": "text-embedding-3-small", "input": ["a", "b"], **extra})


async def stream(provider: MockProvider, request: ChatRequest) -> tuple[list[Any], UsageReport]:
    *chunks, report = [item async for item in provider.chat_stream(request)]
    assert isinstance(report, UsageReport)
    return chunks, report


async def test_n_choices_each_indexed_and_all_billed() -> None:
    result = await MockProvider("m", FIXED).chat(chat(n=3))
    choices = result.body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert all(len(c["message"]["content"].split()) == 6 for c in choices)
    assert len({c["message"]["content"] for c in choices}) > 1  # drawn apart, not copies
    assert result.usage.output_tokens == 18 == result.body["usage"]["completion_tokens"]
    single = await MockProvider("m", FIXED).chat(chat())
    assert result.usage.input_tokens == single.usage.input_tokens  # the prompt counts once


async def test_n_choices_stream_per_index() -> None:
    chunks, report = await stream(MockProvider("m", FIXED), chat(n=2, stream=True))
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["delta"].get("content") or ""
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    roles = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["delta"].get("role")]
    assert roles == [0, 1]
    assert finishes == {0: "stop", 1: "stop"}
    assert [len(t.split()) for t in texts.values()] == [6, 6]
    assert report.usage.output_tokens == 12 == report.chunk["usage"]["completion_tokens"]


async def test_logprobs_follow_the_openai_shape() -> None:
    result = await MockProvider("m", FIXED).chat(chat(n=2, logprobs=True, top_logprobs=3))
    validator("CreateChatCompletionResponse").validate(result.body)
    token = validator("ChatCompletionTokenLogprob")
    for choice in result.body["choices"]:
        content = choice["logprobs"]["content"]
        assert choice["logprobs"]["refusal"] is None
        assert "".join(e["token"] for e in content) == choice["message"]["content"]
        for entry in content:
            token.validate(entry)
            assert entry["logprob"] <= 0 and bytes(entry["bytes"]) == entry["token"].encode()
            top = entry["top_logprobs"]
            assert len(top) == 3 and top[0]["token"] == entry["token"]
            assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
            assert len({t["token"] for t in top}) == 3


async def test_logprobs_without_top_and_absent_by_default() -> None:
    provider = MockProvider("m", FIXED)
    plain = await provider.chat(chat())
    assert plain.body["choices"][0]["logprobs"] is None
    bare = await provider.chat(chat(logprobs=True))
    assert all(e["top_logprobs"] == [] for e in bare.body["choices"][0]["logprobs"]["content"])


async def test_logprobs_in_stream_chunks() -> None:
    chunks, _ = await stream(
        MockProvider("m", FIXED), chat(stream=True, logprobs=True, top_logprobs=2)
    )
    token = validator("ChatCompletionTokenLogprob")
    with_text = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(with_text) == 6
    for chunk in with_text:
        (choice,) = chunk["choices"]
        (entry,) = choice["logprobs"]["content"]
        token.validate(entry)
        assert entry["token"] == choice["delta"]["content"] and len(entry["top_logprobs"]) == 2
    # the role and finish chunks carry none, as upstream's do
    assert all(c["choices"][0]["logprobs"] is None for c in chunks if c not in with_text)


async def test_same_seed_same_logprobs() -> None:
    request = chat(n=2, logprobs=True, top_logprobs=4)
    first = await MockProvider("m", MockOptions(seed=9)).chat(request)
    again = await MockProvider("m", MockOptions(seed=9)).chat(request)
    other = await MockProvider("m", MockOptions(seed=10)).chat(request)
    assert first.body["choices"] == again.body["choices"]
    assert first.body["choices"] != other.body["choices"]


async def test_dimensions_within_the_model_size() -> None:
    provider = MockProvider("m", MockOptions())
    small = await provider.embed(embed(dimensions=256))
    assert [len(d["embedding"]) for d in small.body["data"]] == [256, 256]
    native = await provider.embed(embed())
    assert len(native.body["data"][0]["embedding"]) == 1536
    large = await provider.embed(
        EmbedRequest({"model": "text-embedding-3-large", "input": "a", "dimensions": 3072})
    )
    assert len(large.body["data"][0]["embedding"]) == 3072
    packed = await provider.embed(embed(dimensions=16, encoding_format="base64"))
    raw = base64.b64decode(packed.body["data"][0]["embedding"])
    assert len(struct.unpack("<16f", raw)) == 16
    validator("CreateEmbeddingResponse").validate(packed.body)


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (chat(n=129), "n"),
        (chat(n=0), "n"),
        (chat(n="2"), "n"),
        (chat(n=True), "n"),
        (chat(logprobs="yes"), "logprobs"),
        (chat(logprobs=True, top_logprobs=21), "top_logprobs"),
        (chat(logprobs=True, top_logprobs=-1), "top_logprobs"),
        (chat(top_logprobs=2), "top_logprobs"),
        (chat(tools=[{"type": "function", "function": None}]), "tools[0].function"),
        (chat(tools=["x"]), "tools[0]"),
        (chat(tools=[{"type": "function", "function": {"name": {}}}]), "tools[0].function.name"),
        (chat(tool_choice={"type": "function", "function": 5}), "tool_choice.function"),
        (embed(dimensions=1537), "dimensions"),
        (embed(dimensions=0), "dimensions"),
        (embed(dimensions=5_000_000), "dimensions"),
        (embed(encoding_format="nope"), "encoding_format"),
        (EmbedRequest({"model": "text-embedding-ada-002", "input": "a", "dimensions": 8}), None),
    ],
)
async def test_beyond_the_limits_is_the_upstream_400(request_: Any, param: str | None) -> None:
    provider = MockProvider("m", MockOptions())
    with pytest.raises(UpstreamRejected) as info:
        if isinstance(request_, EmbedRequest):
            await provider.embed(request_)
        else:
            await provider.chat(request_)
    error = info.value
    assert error.status_override == 400 and not error.retryable
    assert error.extra["upstream_type"] == "invalid_request_error"
    if param is not None:
        assert f"'{param}'" in error.message, error.message


async def test_a_stream_beyond_the_limits_fails_before_its_first_chunk() -> None:
    items = MockProvider("m", MockOptions()).chat_stream(chat(n=129, stream=True))
    with pytest.raises(UpstreamRejected):
        await anext(items)


# --- through the gateway -------------------------------------------------------------------

CONFIG = {
    "providers": {"mock": {"kind": "mock", "output_tokens": {"distribution": "fixed", "mean": 10}}}
}


async def test_gateway_bills_every_choice(make_gateway: Any) -> None:
    price = load_catalog().get("gpt-4o-mini")
    assert price is not None
    async with make_gateway(CONFIG) as gw:
        key = await gw.tenant_key("acme")
        auth = {"Authorization": f"Bearer {key}"}
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        one = await gw.client.post("/v1/chat/completions", json=body, headers=auth)
        three = await gw.client.post("/v1/chat/completions", json={**body, "n": 3}, headers=auth)
        streamed = await gw.client.post(
            "/v1/chat/completions", json={**body, "n": 3, "stream": True}, headers=auth
        )
        assert one.status_code == three.status_code == streamed.status_code == 200
        assert len(three.json()["choices"]) == 3
        assert three.json()["usage"]["completion_tokens"] == 30
        entries = sorted(await gw.ledger("acme"), key=lambda e: e.started_at)
        assert [e.output_tokens for e in entries] == [10, 30, 30]
        assert entries[1].cost - entries[0].cost == 20 * price.output
        assert entries[2].cost == entries[1].cost


async def test_gateway_passes_the_mock_400_through(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        key = await gw.tenant_key("acme")
        auth = {"Authorization": f"Bearer {key}"}
        r = await gw.client.post(
            "/v1/embeddings",
            json={"model": "text-embedding-3-small", "input": "a", "dimensions": 5_000_000},
            headers=auth,
        )
        assert r.status_code == 400, r.text
        assert "dimensions" in r.json()["error"]["message"]
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 200},
            headers=auth,
        )
        assert r.status_code == 400, r.text
        assert all(e.cost == 0 for e in await gw.ledger())
