"""The built-in mock provider: deterministic given a seed, realistic usage, OpenAI-shaped."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from farebox.errors import UpstreamError
from farebox.providers.base import ChatRequest, EmbedRequest, UsageReport
from farebox.providers.mock import MockOptions, MockProvider

REASONING = frozenset({"o4-mini"})


def chat(model: str = "gpt-4o-mini", content: str = "hello", **extra: Any) -> ChatRequest:
    return ChatRequest(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    )


async def run(provider: MockProvider, n: int = 5) -> list[tuple[str, int]]:
    out = []
    for i in range(n):
        result = await provider.chat(chat(content=f"q{i}"))
        out.append((result.body["choices"][0]["message"]["content"], result.usage.output_tokens))
    return out


async def test_same_seed_same_answers_other_seed_other_answers() -> None:
    first = await run(MockProvider("m", MockOptions(seed=1)))
    again = await run(MockProvider("m", MockOptions(seed=1)))
    other = await run(MockProvider("m", MockOptions(seed=2)))
    assert first == again
    assert first != other


async def test_output_length_distributions() -> None:
    fixed = MockProvider("m", MockOptions(distribution="fixed", mean_tokens=37))
    assert [n for _, n in await run(fixed)] == [37] * 5
    uniform = MockProvider("m", MockOptions(distribution="uniform", min_tokens=5, max_tokens=9))
    lengths = [n for _, n in await run(uniform, 40)]
    assert min(lengths) >= 5 and max(lengths) <= 9 and len(set(lengths)) > 1
    capped = await MockProvider("m", MockOptions(distribution="fixed", mean_tokens=50)).chat(
        chat(max_tokens=8)
    )
    assert capped.usage.output_tokens == 8
    assert capped.body["choices"][0]["finish_reason"] == "length"


async def test_usage_is_realistic() -> None:
    provider = MockProvider("m", MockOptions(seed=3), REASONING)
    long_prompt = "word " * 6000  # ~7,500 tokens: long enough for prompt caching
    cached = [(await provider.chat(chat(content=long_prompt))).usage for _ in range(10)]
    assert any(u.cached_input_tokens for u in cached)
    for usage in cached:
        assert usage.cached_input_tokens % 128 == 0
        assert usage.cached_input_tokens <= usage.input_tokens
    short = (await provider.chat(chat())).usage
    assert short.cached_input_tokens == 0 and short.reasoning_tokens == 0
    reasoning = (await provider.chat(chat(model="o4-mini"))).usage
    assert 0 < reasoning.reasoning_tokens <= reasoning.output_tokens


async def test_stream_is_openai_shaped_with_a_usage_report() -> None:
    provider = MockProvider("m", MockOptions(seed=4, distribution="fixed", mean_tokens=6))
    items = [item async for item in provider.chat_stream(chat(stream=True))]
    *chunks, report = items
    assert isinstance(report, UsageReport)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(text.split()) == report.usage.output_tokens == 6
    assert report.chunk["choices"] == [] and report.chunk["usage"]["completion_tokens"] == 6


async def test_tool_call_when_tools_are_offered() -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}  # fmt: skip
    result = await MockProvider("m", MockOptions()).chat(chat(tools=[tool]))
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "lookup"


async def test_injected_errors() -> None:
    always = MockProvider("m", MockOptions(error_rate=1.0, error_status=503))
    with pytest.raises(UpstreamError) as info:
        await always.chat(chat())
    assert info.value.upstream_status == 503 and info.value.retryable
    never = MockProvider("m", MockOptions(error_rate=0.0))
    assert (await never.chat(chat())).usage.output_tokens > 0


async def test_embeddings_dimensions_and_base64() -> None:
    provider = MockProvider("m", MockOptions())
    floats = await provider.embed(
        EmbedRequest({"model": "e", "input": ["a", "b"], "dimensions": 8})
    )
    assert [len(d["embedding"]) for d in floats.body["data"]] == [8, 8]
    packed = await provider.embed(
        EmbedRequest({"model": "e", "input": "a", "dimensions": 8, "encoding_format": "base64"})
    )
    decoded = struct.unpack("<8f", base64.b64decode(packed.body["data"][0]["embedding"]))
    assert decoded == pytest.approx(floats.body["data"][0]["embedding"], rel=1e-6)
    assert floats.usage.input_tokens == floats.body["usage"]["prompt_tokens"] > 0
