"""Issue [12], acceptance 5: the openai and anthropic SDKs stream a cached answer and get the
same text and a usage chunk; in process, and end to end against the real ``farebox serve``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai

from farebox.core.cache import HIT_EXACT, MISS
from tests.cache_gateway import MODEL, PLANS, CountingMock, config, settled
from tests.e2e import create_tenant_key, ledger_rows, serve, write_config

QUESTION = [{"role": "user", "content": "Which answer does the cache keep?"}]


def _http(gw: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gw.app))


async def openai_stream(client: openai.AsyncOpenAI) -> tuple[str, Any, str]:
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    text, usage = [], None
    async with raw.parse() as stream:
        async for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
    return "".join(text), usage, raw.headers["x-farebox-cache"]


async def anthropic_stream(client: anthropic.AsyncAnthropic) -> tuple[str, Any, str]:
    async with client.messages.stream(model=MODEL, max_tokens=200, messages=QUESTION) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
        header = s.response.headers["x-farebox-cache"]
    return text, final.usage, header


async def miss_then_hit(
    gw: Any, stream: Callable[[], Awaitable[tuple[str, Any, str]]]
) -> tuple[Any, Any]:
    """Stream the question twice: a miss, then (once it is stored) a hit of the same text;
    the two usages."""
    text, usage, header = await stream()
    await settled(gw)
    assert header == MISS and text
    again, cached_usage, header = await stream()
    assert header == HIT_EXACT and again == text
    return usage, cached_usage


async def test_sdks_stream_a_cached_answer_in_process(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        oai = openai.AsyncOpenAI(api_key=key, base_url="http://gateway/v1",
                                 http_client=_http(gw), max_retries=0)  # fmt: skip
        usage, cached_usage = await miss_then_hit(gw, lambda: openai_stream(oai))
        assert usage.completion_tokens > 0
        assert cached_usage.completion_tokens == usage.completion_tokens
        assert (cached_usage.model_extra or {})["farebox_cost_usd"] == "0.00"
        claude = anthropic.AsyncAnthropic(api_key=key, base_url="http://gateway",
                                          http_client=_http(gw), max_retries=0)  # fmt: skip
        usage, cached_usage = await miss_then_hit(gw, lambda: anthropic_stream(claude))
        assert usage.output_tokens > 0
        assert cached_usage.output_tokens == usage.output_tokens
        assert cached_usage.input_tokens == usage.input_tokens
        assert mock.chats == 2


async def test_sdks_stream_a_cached_answer_from_the_real_server(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, plans=PLANS)
    with serve(cfg, cwd=tmp_path) as server:
        key = create_tenant_key(server.base_url, "acme", "cached")
        async with openai.AsyncOpenAI(api_key=key, base_url=server.base_url + "/v1",
                                      max_retries=0) as oai:  # fmt: skip
            first = await oai.chat.completions.create(model=MODEL, messages=QUESTION)
            text = first.choices[0].message.content
            again = ""
            for _ in range(50):  # the answer is stored behind the reply: look until it is
                again, usage, header = await openai_stream(oai)
                if header == HIT_EXACT:
                    break
            assert header == HIT_EXACT and again == text
            assert usage is not None and first.usage is not None
            assert usage.completion_tokens == first.usage.completion_tokens
        async with anthropic.AsyncAnthropic(api_key=key, base_url=server.base_url,
                                            max_retries=0) as claude:  # fmt: skip
            text, usage, header = await anthropic_stream(claude)
            assert header == MISS
            for _ in range(50):
                again, cached, header = await anthropic_stream(claude)
                if header == HIT_EXACT:
                    break
            assert header == HIT_EXACT and again == text
            assert cached.output_tokens == usage.output_tokens
    rows = ledger_rows(tmp_path / "farebox.db")
    hits = [r for r in rows if r["status"] == "cache_hit"]
    assert hits and all(r["cost"] == 0 and r["saved"] > 0 for r in hits)
    assert {r["cache"] for r in hits} == {HIT_EXACT}
