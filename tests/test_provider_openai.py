from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fakes import Reply
from fakes.openai_upstream import OpenAIUpstream, tool_call, usage
from farebox.core.usage import Usage
from farebox.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from farebox.http.client import HttpClient, SseDecoder, SseEvent
from farebox.providers.base import ChatRequest, EmbedRequest, StreamItem, UsageReport
from farebox.providers.openai import OpenAIProvider

CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.aclose()


@pytest.fixture
async def upstream() -> AsyncIterator[OpenAIUpstream]:
    async with OpenAIUpstream() as fake:
        yield fake


@pytest.fixture
def provider(upstream: OpenAIUpstream, http: HttpClient) -> OpenAIProvider:
    return OpenAIProvider("oai", upstream.base_url + "/", "sk-upstream", http)


async def collect(provider: OpenAIProvider, body: dict[str, Any]) -> list[StreamItem]:
    return [item async for item in provider.chat_stream(ChatRequest(body=body))]


async def test_chat_posts_to_base_url_and_normalises_usage(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.reply_chat("Hi there", usage=usage(1200, 332, cached=1024, reasoning=128))
    result = await provider.chat(ChatRequest(body=CHAT))
    assert upstream.last.path == "/v1/chat/completions"
    assert upstream.last.json == CHAT
    assert result.body["choices"][0]["message"]["content"] == "Hi there"
    assert result.usage == Usage(
        input_tokens=1200, cached_input_tokens=1024, output_tokens=332, reasoning_tokens=128
    )
    assert result.upstream_ms > 0


async def test_upstream_auth_is_the_providers_key_only(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    await provider.chat(ChatRequest(body={**CHAT, "api_key": "sk-client"}))
    assert upstream.last.headers["Authorization"] == "Bearer sk-upstream"
    assert upstream.last.headers.getall("Authorization") == ["Bearer sk-upstream"]
    assert upstream.last.headers["Content-Type"] == "application/json"


async def test_no_authorization_header_without_api_key(
    upstream: OpenAIUpstream, http: HttpClient
) -> None:
    provider = OpenAIProvider("local", upstream.base_url, None, http, {"X-Extra": "1"})
    await provider.chat(ChatRequest(body=CHAT))
    assert "Authorization" not in upstream.last.headers
    assert upstream.last.headers["X-Extra"] == "1"


async def test_only_constructor_base_url_is_used(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    async with OpenAIUpstream() as other:
        hostile = {**CHAT, "base_url": other.base_url, "api_base": other.base_url}
        await provider.chat(ChatRequest(body=hostile))
        await provider.embed(
            EmbedRequest(body={"model": "e", "input": "x", "api_base": other.base_url})
        )
        assert other.calls == 0
    assert upstream.calls == 2
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions", "/v1/embeddings"]


async def test_no_cookies_are_kept_between_requests(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.reply_chat("one", headers={"Set-Cookie": "__cf_bm=tenant-a; Path=/"})
    await provider.chat(ChatRequest(body=CHAT))
    await provider.chat(ChatRequest(body=CHAT))
    assert upstream.calls == 2
    assert "Cookie" not in upstream.last.headers


async def test_chat_forces_non_stream(provider: OpenAIProvider, upstream: OpenAIUpstream) -> None:
    await provider.chat(ChatRequest(body={**CHAT, "stream": True}))
    assert upstream.last.json["stream"] is False


async def test_tool_calls_pass_through(provider: OpenAIProvider, upstream: OpenAIUpstream) -> None:
    call = tool_call("call_1", "get_weather", {"city": "Paris"})
    upstream.reply_chat(None, tool_calls=[call])
    result = await provider.chat(ChatRequest(body=CHAT))
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [call]


async def test_embed(provider: OpenAIProvider, upstream: OpenAIUpstream) -> None:
    upstream.reply_embeddings([[0.5, 0.25]], prompt_tokens=7)
    result = await provider.embed(
        EmbedRequest(body={"model": "text-embedding-3-small", "input": "a"})
    )
    assert upstream.last.path == "/v1/embeddings"
    assert result.body["data"][0]["embedding"] == [0.5, 0.25]
    assert result.usage == Usage(input_tokens=7)


async def test_stream_yields_chunks_then_usage_report(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.reply_stream(["Hel", "lo"], usage=usage(9, 2, cached=4, reasoning=1))
    items = await collect(provider, CHAT)
    sent = upstream.last.json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert upstream.last.headers["Accept"] == "text/event-stream"
    chunks = [item for item in items[:-1] if isinstance(item, dict)]
    report = items[-1]
    assert len(chunks) == len(items) - 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert isinstance(report, UsageReport)
    assert report.usage == Usage(
        input_tokens=9, cached_input_tokens=4, output_tokens=2, reasoning_tokens=1
    )
    assert report.chunk["choices"] == [] and report.chunk["usage"]["total_tokens"] == 11


async def test_stream_keeps_existing_stream_options(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_obfuscation": False}}
    await collect(provider, body)
    assert upstream.last.json["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }


async def test_stream_tool_call_chunks(provider: OpenAIProvider, upstream: OpenAIUpstream) -> None:
    upstream.reply_stream([], tool_calls=[tool_call("call_1", "f", {"a": 1})], usage=usage())
    items = await collect(provider, CHAT)
    deltas = [i["choices"][0]["delta"] for i in items if isinstance(i, dict)]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"] == "call_1" and calls[0]["function"]["name"] == "f"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a":1}'


async def test_stream_without_usage_chunk_has_no_report(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.reply_stream(["x"], usage=None)
    items = await collect(provider, CHAT)
    assert items and not any(isinstance(i, UsageReport) for i in items)


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (408, True), (409, True)]
)
async def test_retryable_statuses(
    provider: OpenAIProvider, upstream: OpenAIUpstream, status: int, retryable: bool
) -> None:
    upstream.reply_error(status, "Slow down", type="server_error", headers={"Retry-After": "7"})
    with pytest.raises(UpstreamError) as info:
        await provider.chat(ChatRequest(body=CHAT))
    assert not isinstance(info.value, UpstreamRejected)
    assert info.value.upstream_status == status
    assert info.value.retryable is retryable
    assert info.value.headers["Retry-After"] == "7"
    assert "Slow down" in info.value.message


@pytest.mark.parametrize("status", [401, 402, 403, 404])
async def test_upstream_refusing_our_account_is_a_gateway_error(
    provider: OpenAIProvider, upstream: OpenAIUpstream, status: int
) -> None:
    upstream.reply_error(status, "Incorrect API key provided: sk-abc", code="invalid_api_key")
    with pytest.raises(UpstreamError) as info:
        await provider.chat(ChatRequest(body=CHAT))
    assert not isinstance(info.value, UpstreamRejected)
    assert info.value.status == 502 and info.value.retryable is False
    assert "sk-abc" not in info.value.message  # the upstream's text may echo our key


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_client_errors_are_rejected_with_upstream_message(
    provider: OpenAIProvider, upstream: OpenAIUpstream, status: int
) -> None:
    upstream.reply_error(status, "max_tokens is too large", code="invalid_value")
    with pytest.raises(UpstreamRejected) as info:
        await provider.chat(ChatRequest(body=CHAT))
    assert info.value.message == "max_tokens is too large"
    assert info.value.upstream_status == status
    assert info.value.retryable is False
    assert info.value.extra["upstream_code"] == "invalid_value"


async def test_unparseable_error_body(provider: OpenAIProvider, upstream: OpenAIUpstream) -> None:
    upstream.push(Reply(status=502, body=b"<html>bad gateway</html>"))
    with pytest.raises(UpstreamError) as info:
        await provider.chat(ChatRequest(body=CHAT))
    assert info.value.upstream_status == 502 and info.value.retryable


async def test_stream_http_error_before_first_chunk(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.reply_error(429, "Rate limit reached", type="requests", code="rate_limit_exceeded")
    with pytest.raises(UpstreamError) as info:
        await collect(provider, CHAT)
    assert info.value.upstream_status == 429 and info.value.retryable


async def test_stream_error_frame_mid_stream(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    error = {
        "message": "The server had an error",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    upstream.reply_stream(error=error)
    seen: list[StreamItem] = []
    with pytest.raises(UpstreamError) as info:
        async for item in provider.chat_stream(ChatRequest(body=CHAT)):
            seen.append(item)
    assert len(seen) == 1
    assert "The server had an error" in info.value.message
    assert not isinstance(info.value, UpstreamRejected)


async def test_stream_disconnect_mid_stream(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.reply_stream(["a", "b", "c"], usage=usage(), disconnect_after=2)
    seen: list[StreamItem] = []
    with pytest.raises(UpstreamError) as info:
        async for item in provider.chat_stream(ChatRequest(body=CHAT)):
            seen.append(item)
    assert len(seen) == 2
    assert info.value.upstream_status == 0 and info.value.retryable


async def test_stream_clean_close_without_done_is_an_error(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.reply_stream(["a"], usage=None, done=False)
    with pytest.raises(UpstreamError, match="before \\[DONE\\]"):
        await collect(provider, CHAT)


async def test_connection_refused_is_retryable_upstream_error(http: HttpClient) -> None:
    async with OpenAIUpstream() as gone:
        url = gone.base_url
    provider = OpenAIProvider("down", url, "k", http)
    with pytest.raises(UpstreamError) as info:
        await provider.chat(ChatRequest(body=CHAT))
    assert info.value.upstream_status == 0 and info.value.retryable


async def test_timeout_maps_to_upstream_timeout(http: HttpClient) -> None:
    async with OpenAIUpstream() as upstream:
        upstream.push(Reply(frames=[b"{"], hold=True))
        provider = OpenAIProvider("slow", upstream.base_url, "k", http)
        with pytest.raises(UpstreamTimeout):
            await provider.chat(ChatRequest(body=CHAT, timeout_s=0.05))


def test_sse_decoder_handles_split_frames_crlf_and_comments() -> None:
    decoder = SseDecoder()
    events = decoder.feed(b': keep-alive\r\n\r\nevent: a\r\ndata: {"x"')
    assert events == []
    events = decoder.feed(b":1}\r\n\r\ndata: one\ndata: two\n\ndata: tail\n")
    assert events == [SseEvent("a", b'{"x":1}'), SseEvent("", b"one\ntwo")]
    assert decoder.finish() == [SseEvent("", b"tail")]


async def test_consumer_closing_stream_early_releases_it(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.push(Reply(frames=[b'data: {"choices": [{"index": 0, "delta": {}}]}\n\n'], hold=True))
    stream = provider.chat_stream(ChatRequest(body=CHAT))
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert isinstance(first, dict) and first["choices"][0]["delta"] == {}
    result = await provider.chat(ChatRequest(body=CHAT))
    assert result.body["object"] == "chat.completion" and upstream.calls == 2


async def test_upstream_error_text_is_redacted(
    provider: OpenAIProvider, upstream: OpenAIUpstream
) -> None:
    upstream.reply_error(
        429,
        "Rate limit reached in organization org-PLATFORM123 for key sk-proj-abcdef1234",
        type="requests",
        code="rate_limit_exceeded",
    )
    with pytest.raises(UpstreamError) as info:
        await provider.chat(ChatRequest(body=CHAT))
    assert "org-PLATFORM123" not in info.value.message
    assert "sk-proj-abcdef1234" not in info.value.message
    assert "[redacted]" in info.value.message and info.value.retryable
