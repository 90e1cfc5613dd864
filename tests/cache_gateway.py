"""Helpers for the response cache stage's tests: a mock provider that counts what reaches it,
plans that cache, and a few calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from farebox.providers.base import ChatRequest, ChatResult, EmbedRequest, EmbedResult, StreamItem
from farebox.providers.mock import MockOptions, MockProvider

MODEL = "gpt-4o-mini"
PLANS: dict[str, Any] = {
    "cached": {"models": ["*"], "cache": {"mode": "exact"}},
    "plain": {"models": ["*"]},
    "free_hits": {"models": ["*"], "cache": {"mode": "exact", "hit_price": "free"}},
    "half_hits": {
        "models": ["*"],
        "cache": {"mode": "exact", "hit_price": "0.5"},
        "pricing": {"markup": "1.5"},
    },  # fmt: skip
    "by_key": {"models": ["*"], "cache": {"mode": "exact", "partition": "key"}},
    "by_user": {"models": ["*"], "cache": {"mode": "exact", "partition": "user"}},
    "limited": {
        "models": ["*"],
        "cache": {"mode": "exact"},
        "rate_limits": [{"scope": "key", "requests_per_minute": 3}],
    },  # fmt: skip
}


class CountingMock(MockProvider):
    """The built-in mock, counting the chat calls and the embeddings inputs it is sent."""

    def __init__(self, name: str = "sim", **options: Any) -> None:
        super().__init__(name, MockOptions(seed=7, **options))
        self.chats = 0
        self.embedded: list[Any] = []  # the ``input`` of each embeddings call

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.chats += 1
        return await super().chat(request)

    def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        self.chats += 1
        return super().chat_stream(request)

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        self.embedded.append(request.body.get("input"))
        return await super().embed(request)


def config(plans: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"providers": {"sim": {"kind": "mock"}}, "plans": plans or PLANS, **extra}


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def ask(text: str = "What is the capital of France?", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


async def post(gw: Any, key: str, body: dict[str, Any], path: str = "/v1/chat/completions",
               **headers: str) -> httpx.Response:  # fmt: skip
    """POST ``body``, then wait until whatever the cache stores for it is stored."""
    r = await gw.client.post(path, json=body, headers=auth(key, **headers))
    await settled(gw)
    return r


async def settled(gw: Any) -> None:
    cache = gw.app.state.services.gateway.cache
    if cache is not None:
        await cache.settled()


def text_of(r: httpx.Response) -> str:
    return str(r.json()["choices"][0]["message"]["content"])


def sse_data(raw: str) -> list[Any]:
    """The JSON payloads of an SSE stream (``[DONE]`` as the string)."""
    out: list[Any] = []
    for line in raw.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(raw: str) -> str:
    parts = []
    for chunk in sse_data(raw):
        if isinstance(chunk, dict):
            for choice in chunk.get("choices") or ():
                parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)
