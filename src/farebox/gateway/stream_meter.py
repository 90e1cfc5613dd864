"""Stream helpers for the request path: SSE framing and metering what a stream produced."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry
from farebox.core.tokens import estimate_messages
from farebox.core.usage import Usage, to_openai
from farebox.providers.base import StreamItem

DONE = b"data: [DONE]\n\n"


def sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class StreamMeter:
    """Counts what a stream produced, for when the provider never reports usage."""

    def __init__(self, body: Mapping[str, Any], started: float) -> None:
        self._body = body
        self.started = started
        self._chars = 0
        self.first_at: float | None = None
        self.identity: dict[str, Any] = {"object": "chat.completion.chunk"}

    def see(self, chunk: Mapping[str, Any]) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
            self.identity = {
                k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk
            }
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                self._chars += len(content)
            # reasoning streamed as text (Anthropic thinking, vLLM and DeepSeek) is output too
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str):
                self._chars += len(reasoning)
            for call in delta.get("tool_calls") or ():
                args = (call.get("function") or {}).get("arguments")
                if isinstance(args, str):
                    self._chars += len(args)

    def usage_chunk(self, entry: LedgerEntry) -> dict[str, Any]:
        """A final usage chunk built from our own count, for when upstream sent none."""
        usage = Usage(input_tokens=entry.input_tokens, output_tokens=entry.output_tokens)
        return {**self.identity, "choices": [], "usage": to_openai(usage)}

    def usage(self) -> Usage:
        output = -(-self._chars // 4) if self._chars else 0
        return Usage(
            input_tokens=estimate_messages(self._body.get("messages")), output_tokens=output
        )

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class ResponsesMeter(StreamMeter):
    """Counts what a native Responses stream produced: the text of its ``*.delta`` events
    (output text, function call arguments, reasoning)."""

    def see(self, chunk: Mapping[str, Any]) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        delta = chunk.get("delta")
        if isinstance(delta, str):
            self._chars += len(delta)


def usage_chunk(chunk: Mapping[str, Any], cost_pico: int) -> dict[str, Any]:
    out = dict(chunk)
    usage = dict(out.get("usage") or {})
    usage["farebox_cost_usd"] = format_usd(cost_pico)
    out["usage"] = usage
    return out


async def close_quietly(items: AsyncIterator[StreamItem]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: S110 - closing a broken upstream must not mask the real error
            pass
