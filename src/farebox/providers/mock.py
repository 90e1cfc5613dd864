"""The built-in mock provider: OpenAI-shaped, in-process, deterministic given a seed.

Options: latency before a response, time to first token, tokens per second, the output
length distribution, an error rate and status. It reports realistic usage: cached prompt
tokens for long prompts, and reasoning tokens for reasoning models.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from farebox.core.tokens import estimate_input, estimate_messages
from farebox.core.usage import Usage, to_openai
from farebox.errors import UpstreamError
from farebox.providers.base import (
    JSON,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    StreamItem,
    UsageReport,
)

WORDS = (
    "the gateway routes each request to a healthy provider and records its exact cost so "
    "finance can invoice every tenant for what it used while budgets hold under load"
).split()
CACHE_MIN_PROMPT = 1024
CACHE_BLOCK = 128


@dataclass(frozen=True, slots=True)
class MockOptions:
    seed: int = 0
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    distribution: str = "lognormal"
    mean_tokens: int = 120
    min_tokens: int = 1
    max_tokens: int = 1024
    error_rate: float = 0.0
    error_status: int = 500
    error_statuses: tuple[int, ...] = ()
    spike_rate: float = 0.0
    spike_ms: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_s: float = 1.0
    disconnect_rate: float = 0.0
    disconnect_after: int = 3


@dataclass(frozen=True, slots=True)
class _Plan:
    text_tokens: list[str]
    finish_reason: str
    usage: Usage
    tool_call: JSON | None


class MockProvider:
    kind = "mock"

    def __init__(
        self, name: str, options: MockOptions, reasoning_models: frozenset[str] = frozenset()
    ) -> None:
        self.name = name
        self._options = options
        self._reasoning = reasoning_models
        self._counter = 0

    # randomness ------------------------------------------------------------------
    def _rng(self, body: Mapping[str, Any]) -> random.Random:
        self._counter += 1
        digest = hashlib.sha256(repr(sorted(body.items(), key=lambda kv: kv[0])).encode()).digest()
        seed = int.from_bytes(digest[:8], "big") ^ (self._options.seed * 1_000_003) ^ self._counter
        return random.Random(seed)

    def _fail_maybe(self, rng: random.Random) -> None:
        o = self._options
        if o.rate_limit_rate and rng.random() < o.rate_limit_rate:
            raise UpstreamError(
                "mock provider injected 429 rate_limit_exceeded",
                upstream_status=429,
                retry_after=o.retry_after_s,
                headers={"Retry-After": f"{o.retry_after_s:g}"},
            )
        if o.error_rate and rng.random() < o.error_rate:
            status = rng.choice(o.error_statuses) if o.error_statuses else o.error_status
            raise UpstreamError(f"mock provider injected error {status}", upstream_status=status)

    async def _delay(self, rng: random.Random) -> None:
        o = self._options
        spike = o.spike_ms if o.spike_rate and rng.random() < o.spike_rate else 0.0
        await _pause(o.latency_ms + o.ttft_ms + spike)

    def _length(self, rng: random.Random) -> int:
        o = self._options
        if o.distribution == "fixed":
            n = o.mean_tokens
        elif o.distribution == "uniform":
            n = rng.randint(o.min_tokens, o.max_tokens)
        else:
            n = int(rng.lognormvariate(math.log(max(o.mean_tokens, 1)) - 0.18, 0.6))
        return min(max(n, o.min_tokens), o.max_tokens)

    # planning --------------------------------------------------------------------
    def _plan(self, body: JSON, rng: random.Random) -> _Plan:
        model = str(body.get("model", ""))
        prompt = estimate_messages(body.get("messages"))
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        tool_call = _tool_call(body, rng)
        want = 12 if tool_call else self._length(rng)
        reasoning = rng.randint(want // 4, want) if model in self._reasoning else 0
        limit = int(cap) if isinstance(cap, int) and cap > 0 else None
        visible = want
        finish = "tool_calls" if tool_call else "stop"
        if limit is not None and reasoning + visible > limit:
            reasoning = min(reasoning, limit // 2)
            visible = max(limit - reasoning, 0)
            finish = "length"
        cached = 0
        if prompt >= CACHE_MIN_PROMPT and rng.random() < 0.5:
            cached = (prompt // CACHE_BLOCK) * CACHE_BLOCK
        usage = Usage(
            input_tokens=prompt,
            cached_input_tokens=cached,
            output_tokens=visible + reasoning,
            reasoning_tokens=reasoning,
        )
        words = [("" if i == 0 else " ") + rng.choice(WORDS) for i in range(visible)]
        return _Plan(words if not tool_call else [], finish, usage, tool_call)

    # Provider protocol -----------------------------------------------------------
    async def chat(self, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        rng = self._rng(request.body)
        await self._delay(rng)
        self._fail_maybe(rng)
        plan = self._plan(request.body, rng)
        if self._options.tokens_per_second:
            await asyncio.sleep(len(plan.text_tokens) / self._options.tokens_per_second)
        message: JSON = {"role": "assistant", "content": "".join(plan.text_tokens) or None}
        if plan.tool_call:
            message["tool_calls"] = [plan.tool_call]
        message["refusal"] = None
        body: JSON = {
            "id": _completion_id(rng),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": plan.finish_reason,
                }
            ],
            "usage": to_openai(plan.usage),
            "system_fingerprint": "fp_farebox_mock",
        }
        elapsed = (time.perf_counter() - started) * 1000
        return ChatResult(body=body, usage=plan.usage, upstream_ms=elapsed)

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        rng = self._rng(request.body)
        await self._delay(rng)
        self._fail_maybe(rng)
        plan = self._plan(request.body, rng)
        o = self._options
        cut = o.disconnect_after if o.disconnect_rate and rng.random() < o.disconnect_rate else 0
        base: JSON = {
            "id": _completion_id(rng),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.body.get("model"),
            "system_fingerprint": "fp_farebox_mock",
        }
        first: JSON = {"role": "assistant", "content": "", "refusal": None}
        yield _chunk(base, first, None)
        delay = 1.0 / self._options.tokens_per_second if self._options.tokens_per_second else 0
        for sent, word in enumerate(plan.text_tokens, start=1):
            if delay:
                await asyncio.sleep(delay)
            yield _chunk(base, {"content": word}, None)
            if cut and sent >= cut:
                raise UpstreamError("mock provider dropped the stream", upstream_status=0)
        if plan.tool_call:
            yield _chunk(base, {"tool_calls": [{"index": 0, **plan.tool_call}]}, None)
        yield _chunk(base, {}, plan.finish_reason)
        usage_chunk = {**base, "choices": [], "usage": to_openai(plan.usage)}
        yield UsageReport(usage=plan.usage, chunk=usage_chunk)

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        rng = self._rng(request.body)
        await _pause(self._options.latency_ms)
        self._fail_maybe(rng)
        inputs = request.body.get("input")
        items = inputs if isinstance(inputs, list) and not _is_tokens(inputs) else [inputs]
        dims = request.body.get("dimensions")
        size = dims if isinstance(dims, int) and dims > 0 else 1536
        as_b64 = request.body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(item, size, as_b64)}
            for i, item in enumerate(items)
        ]
        tokens = estimate_input(inputs)
        usage = Usage(input_tokens=tokens)
        body: JSON = {
            "object": "list",
            "data": data,
            "model": request.body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return EmbedResult(body=body, usage=usage)

    async def aclose(self) -> None:
        return None


async def _pause(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


def _completion_id(rng: random.Random) -> str:
    return f"chatcmpl-mock{rng.getrandbits(64):016x}"


def _chunk(base: JSON, delta: JSON, finish: str | None) -> JSON:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**base, "choices": [choice], "usage": None}


def _is_tokens(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, int) for v in value)


def _vector(item: Any, size: int, as_b64: bool) -> list[float] | str:
    seed = hashlib.sha256(repr(item).encode()).digest()
    rng = random.Random(seed)
    raw = [rng.uniform(-1.0, 1.0) for _ in range(size)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    values = [v / norm for v in raw]
    if as_b64:
        return base64.b64encode(struct.pack(f"<{size}f", *values)).decode()
    return values


def _tool_call(body: JSON, rng: random.Random) -> JSON | None:
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        if messages[-1].get("role") == "tool":
            return None
    functions = [t.get("function", {}) for t in tools if isinstance(t, dict)]
    if isinstance(choice, dict):
        wanted = choice.get("function", {}).get("name")
        functions = [f for f in functions if f.get("name") == wanted] or functions
    fn = functions[0] if functions else {}
    raw_params = fn.get("parameters")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    props = params.get("properties") or {}
    args = {name: "mock" for name in (params.get("required") or list(props)[:1])}
    return {
        "id": f"call_mock{rng.getrandbits(48):012x}",
        "type": "function",
        "function": {"name": fn.get("name", "tool"), "arguments": orjson.dumps(args).decode()},
    }
