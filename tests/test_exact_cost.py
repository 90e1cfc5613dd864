"""Acceptance 2: cost equals the hand-computed value to the last digit, in the
``x-farebox-cost-usd`` header, the stream's final usage chunk and the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fakes import anthropic_upstream as an
from fakes import openai_upstream as oa
from farebox.core.money import format_usd, mul_ratio, parse_usd

# (id, model, provider family, upstream usage, hand-computed USD)
# Prices (USD per 1M tokens) from shared/reference/wire-formats.md section 9.
CASES = [
    # gpt-4o-mini: (1200-1024)*0.15 + 1024*0.075 + 332*0.60 = 26.4 + 76.8 + 199.2 = 302.4
    ("openai-cached", "gpt-4o-mini", "openai", oa.usage(1200, 332, cached=1024, reasoning=128),
     "0.0003024"),
    # o4-mini: 500*1.10 + 1000*4.40 (reasoning is part of completion) = 550 + 4400 = 4950
    ("openai-reasoning", "o4-mini", "openai", oa.usage(500, 1000, reasoning=800), "0.00495"),
    # gpt-4.1-nano: 1024*0.10 + 1024*0.025 + 10*0.40 = 102.4 + 25.6 + 4 = 132
    ("openai-nano-cached", "gpt-4.1-nano", "openai", oa.usage(2048, 10, cached=1024), "0.000132"),
    # gpt-5-nano: 7*0.05 + 3*0.005 + 1*0.40 = 0.35 + 0.015 + 0.40 = 0.765
    ("openai-sub-nano", "gpt-5-nano", "openai", oa.usage(10, 1, cached=3), "0.000000765"),
    # claude-sonnet-4-5: 25*3 + 3000*6 (1h write) + 12000*0.30 + 120*15 = 75+18000+3600+1800
    ("anthropic-1h-write-read", "claude-sonnet-4-5", "anthropic",
     an.usage(25, 120, read=12000, write_1h=3000), "0.023475"),
    # claude-haiku-4-5: 100*1 + 2000*1.25 (5m write) + 50*5 = 100 + 2500 + 250 = 2850
    ("anthropic-5m-write", "claude-haiku-4-5", "anthropic", an.usage(100, 50, write_5m=2000),
     "0.00285"),
    # claude-opus-4-5: 10*5 + 100*6.25 + 200*10 + 1000*0.50 + 7*25 = 50+625+2000+500+175 = 3350
    ("anthropic-both-writes", "claude-opus-4-5", "anthropic",
     an.usage(10, 7, read=1000, write_5m=100, write_1h=200), "0.00335"),
]  # fmt: skip


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[oa.OpenAIUpstream, an.AnthropicUpstream]]:
    async with oa.OpenAIUpstream() as openai_up, an.AnthropicUpstream() as anthropic_up:
        yield openai_up, anthropic_up


def _config(openai_up: Any, anthropic_up: Any) -> dict[str, Any]:
    return {
        "providers": {
            "oa": {"kind": "openai", "base_url": openai_up.base_url, "api_key": "env:OA_KEY"},
            "an": {"kind": "anthropic", "base_url": anthropic_up.base_url, "api_key": "env:AN_KEY"},
        },
        "plans": {"resell": {"models": ["*"], "pricing": {"markup": "1.25"}}},
    }


ENV = {"OA_KEY": "sk-upstream-openai", "AN_KEY": "sk-ant-upstream"}
CHAT = {"messages": [{"role": "user", "content": "price me"}], "max_tokens": 2000}


@pytest.mark.parametrize(
    ("case", "model", "family", "usage", "usd"), CASES, ids=[c[0] for c in CASES]
)
async def test_non_streamed_cost_is_exact(
    make_gateway: Any, upstreams: Any, case: str, model: str, family: str, usage: Any, usd: str
) -> None:
    openai_up, anthropic_up = upstreams
    if family == "openai":
        openai_up.reply_chat("ok", usage=usage, model=model)
    else:
        anthropic_up.reply_message([an.text_block("ok")], usage=usage)
    async with make_gateway(_config(openai_up, anthropic_up), env=ENV) as gw:
        key = await gw.tenant_key("t1", "resell")
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": model, **CHAT},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-cost-usd"] == usd
        assert r.headers["x-farebox-model"] == model
        [entry] = await gw.ledger("t1")
        assert entry.cost == parse_usd(usd)
        assert entry.revenue == mul_ratio(entry.cost, 5, 4)  # markup 1.25, half-up
        assert entry.request_id == r.headers["x-farebox-request-id"]


def _stream_frames(text: str) -> list[dict[str, Any]]:
    frames = []
    for block in text.split("\n\n"):
        if block.startswith("data: ") and block != "data: [DONE]":
            frames.append(orjson.loads(block[len("data: ") :]))
    return frames


@pytest.mark.parametrize(
    ("case", "model", "family", "usage", "usd"), CASES, ids=[c[0] for c in CASES]
)
async def test_streamed_cost_is_exact(
    make_gateway: Any, upstreams: Any, case: str, model: str, family: str, usage: Any, usd: str
) -> None:
    openai_up, anthropic_up = upstreams
    if family == "openai":
        openai_up.reply_stream(["o", "k"], usage=usage)
    else:
        start = {**usage, "output_tokens": 1}
        anthropic_up.reply_stream(
            ["o", "k"], start_usage=start, delta_usages=[{"output_tokens": 1}, usage]
        )
    async with make_gateway(_config(openai_up, anthropic_up), env=ENV) as gw:
        key = await gw.tenant_key("t1", "resell")
        body = {"model": model, **CHAT, "stream": True, "stream_options": {"include_usage": True}}
        r = await gw.client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200
        assert r.text.endswith("data: [DONE]\n\n")
        final = _stream_frames(r.text)[-1]
        assert final["choices"] == []
        assert final["usage"]["farebox_cost_usd"] == usd
        [entry] = await gw.ledger("t1")
        assert entry.cost == parse_usd(usd)
        assert entry.stream is True and entry.status == "ok" and entry.usage_source == "provider"


async def test_embedding_cost_is_exact(make_gateway: Any, upstreams: Any) -> None:
    openai_up, anthropic_up = upstreams
    openai_up.reply_embeddings([[0.1, 0.2]], prompt_tokens=8)  # 8 * 0.02 / 1M = 0.00000016
    async with make_gateway(_config(openai_up, anthropic_up), env=ENV) as gw:
        key = await gw.tenant_key("t1", "resell")
        r = await gw.client.post(
            "/v1/embeddings",
            json={"model": "text-embedding-3-small", "input": "hello"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-cost-usd"] == "0.00000016"
        [entry] = await gw.ledger("t1")
        assert format_usd(entry.cost) == "0.00000016"


async def test_price_override_per_deployment(make_gateway: Any, upstreams: Any) -> None:
    openai_up, anthropic_up = upstreams
    openai_up.reply_chat("ok", usage=oa.usage(1000, 1000))
    config = _config(openai_up, anthropic_up)
    config["models"] = {
        "house-llm": [
            {"provider": "oa", "model": "llama-3-70b", "price": {"input": "0.2", "output": "0.4"}}
        ]
    }
    async with make_gateway(config, env=ENV) as gw:
        key = await gw.tenant_key("t1", "resell")
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "house-llm", **CHAT},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        # 1000*0.2 + 1000*0.4 = 600 per 1M
        assert r.headers["x-farebox-cost-usd"] == "0.0006"
        assert openai_up.last.json["model"] == "llama-3-70b"
        assert openai_up.last.headers["authorization"] == "Bearer sk-upstream-openai"
