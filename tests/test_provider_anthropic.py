from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fakes.anthropic_upstream import (
    AnthropicUpstream,
    stream_events,
    text_block,
    tool_use_block,
    usage,
)
from farebox.core.usage import Usage
from farebox.errors import UpstreamError, UpstreamRejected
from farebox.http.client import HttpClient
from farebox.providers.anthropic import AnthropicProvider
from farebox.providers.base import ChatRequest, EmbedRequest, StreamItem, UsageReport

CHAT = {
    "model": "claude-sonnet-4-5",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "max_tokens": 256,
}


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.aclose()


@pytest.fixture
async def upstream() -> AsyncIterator[AnthropicUpstream]:
    async with AnthropicUpstream() as fake:
        yield fake


@pytest.fixture
def provider(upstream: AnthropicUpstream, http: HttpClient) -> AnthropicProvider:
    return AnthropicProvider("claude", upstream.base_url + "/", "sk-ant-upstream", http)


async def collect(provider: AnthropicProvider, body: dict[str, Any]) -> list[StreamItem]:
    return [item async for item in provider.chat_stream(ChatRequest(body=body))]


async def test_chat_translates_request_and_sends_anthropic_headers(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    await provider.chat(ChatRequest(body={**CHAT, "api_key": "sk-client"}))
    sent = upstream.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-upstream"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "Authorization" not in sent.headers
    assert sent.json["system"] == "Be brief."
    assert sent.json["messages"] == [{"role": "user", "content": "Hi"}]
    assert sent.json["max_tokens"] == 256
    assert "stream" not in sent.json and "api_key" not in sent.json


async def test_chat_result_is_openai_shaped_with_exact_anthropic_usage(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    upstream.reply_message(
        [text_block("Hello!")], usage=usage(25, 120, read=12000, write_5m=1000, write_1h=3000)
    )
    result = await provider.chat(ChatRequest(body=CHAT))
    assert result.body["object"] == "chat.completion"
    assert result.body["choices"][0]["message"]["content"] == "Hello!"
    assert result.usage == Usage(
        input_tokens=16025,
        cached_input_tokens=12000,
        cache_write_5m_tokens=1000,
        cache_write_1h_tokens=3000,
        output_tokens=120,
    )
    assert result.body["usage"]["prompt_tokens"] == 16025
    assert result.upstream_ms > 0


async def test_chat_tool_use_round_trip(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    upstream.reply_message(
        [tool_use_block("toolu_1", "get_weather", {"city": "Paris"})], stop_reason="tool_use"
    )
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    result = await provider.chat(ChatRequest(body={**CHAT, "tools": [tool]}))
    assert upstream.last.json["tools"] == [
        {"name": "get_weather", "input_schema": {"type": "object"}}
    ]
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Paris"
    }


async def test_only_constructor_base_url_is_used(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    async with AnthropicUpstream() as other:
        await provider.chat(ChatRequest(body={**CHAT, "base_url": other.base_url}))
        await collect(provider, {**CHAT, "api_base": other.base_url})
        assert other.calls == 0
    assert upstream.calls == 2


async def test_stream_translates_and_reports_merged_cumulative_usage(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    upstream.reply_stream(
        ["Hel", "lo"],
        start_usage=usage(25, 1, read=12000, write_1h=300),
        delta_usages=[{"output_tokens": 60}, {"output_tokens": 120, "input_tokens": 30}],
    )
    items = await collect(provider, {**CHAT, "stream": True})
    assert upstream.last.json["stream"] is True
    assert upstream.last.headers["accept"] == "text/event-stream"
    chunks = [item for item in items[:-1] if isinstance(item, dict)]
    report = items[-1]
    assert len(chunks) == len(items) - 1
    assert all(isinstance(c, dict) for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert isinstance(report, UsageReport)
    assert report.usage == Usage(
        input_tokens=30 + 12000 + 300,
        cached_input_tokens=12000,
        cache_write_1h_tokens=300,
        output_tokens=120,
    )
    assert report.chunk["choices"] == []
    assert report.chunk["usage"]["completion_tokens"] == 120


async def test_stream_tool_calls(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    upstream.reply_stream([], tools=[("toolu_1", "f", ['{"a"', ": 1}"])])
    items = await collect(provider, CHAT)
    calls = [
        i["choices"][0]["delta"]["tool_calls"][0]
        for i in items
        if isinstance(i, dict) and "tool_calls" in i["choices"][0]["delta"]
    ]
    assert calls[0]["id"] == "toolu_1" and calls[0]["function"]["name"] == "f"
    assert orjson.loads("".join(c["function"]["arguments"] for c in calls)) == {"a": 1}


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, "api_error"), (529, "overloaded_error"), (429, "rate_limit_error")],
)
async def test_retryable_http_errors(
    provider: AnthropicProvider, upstream: AnthropicUpstream, status: int, error_type: str
) -> None:
    upstream.reply_error(status, error_type, "Try later", headers={"retry-after": "12"})
    with pytest.raises(UpstreamError) as info:
        await provider.chat(ChatRequest(body=CHAT))
    assert not isinstance(info.value, UpstreamRejected)
    assert info.value.upstream_status == status and info.value.retryable
    assert info.value.headers["Retry-After"] == "12"
    assert info.value.extra["upstream_type"] == error_type


async def test_bad_request_is_rejected_with_upstream_message(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    upstream.reply_error(400, "invalid_request_error", "max_tokens: must be positive")
    with pytest.raises(UpstreamRejected) as info:
        await provider.chat(ChatRequest(body=CHAT))
    assert info.value.message == "max_tokens: must be positive"
    assert info.value.upstream_status == 400 and not info.value.retryable


async def test_stream_http_error(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    upstream.reply_error(529, "overloaded_error", "Overloaded")
    with pytest.raises(UpstreamError) as info:
        await collect(provider, CHAT)
    assert info.value.upstream_status == 529 and info.value.retryable


async def test_error_event_mid_stream(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    upstream.reply_stream_error("overloaded_error", "Overloaded")
    seen: list[StreamItem] = []
    with pytest.raises(UpstreamError) as info:
        async for item in provider.chat_stream(ChatRequest(body=CHAT)):
            seen.append(item)
    assert len(seen) == 2  # role chunk and "Hel"
    assert info.value.upstream_status == 529 and info.value.retryable
    assert "Overloaded" in info.value.message


async def test_disconnect_mid_stream(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    upstream.reply_stream(["a", "b", "c"], disconnect_after=5)
    seen: list[StreamItem] = []
    with pytest.raises(UpstreamError) as info:
        async for item in provider.chat_stream(ChatRequest(body=CHAT)):
            seen.append(item)
    assert seen and not any(isinstance(i, UsageReport) for i in seen)
    assert info.value.upstream_status == 0


async def test_stream_ending_without_message_stop_is_an_error(
    provider: AnthropicProvider, upstream: AnthropicUpstream
) -> None:
    upstream.reply_events(stream_events(["a"])[:-1])
    with pytest.raises(UpstreamError, match="message_stop"):
        await collect(provider, CHAT)


async def test_embed_is_refused(provider: AnthropicProvider, upstream: AnthropicUpstream) -> None:
    with pytest.raises(UpstreamRejected) as info:
        await provider.embed(EmbedRequest(body={"model": "x", "input": "y"}))
    assert info.value.upstream_status == 400
    assert upstream.calls == 0


async def test_owns_its_client_when_none_is_given(upstream: AnthropicUpstream) -> None:
    provider = AnthropicProvider("own", upstream.base_url, "k")
    result = await provider.chat(ChatRequest(body=CHAT))
    await provider.aclose()
    assert result.body["choices"][0]["message"]["content"] == "Hello"
