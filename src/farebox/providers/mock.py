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
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
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
    ForwardHeaders,
    StreamItem,
    UsageReport,
)
from farebox.providers.mock_choices import (
    ChoiceShape,
    check_tools,
    choice_shape,
    embedding_size,
    token_logprobs,
)

WORDS = (
    "the gateway routes each request to a healthy provider and records its exact cost so "
    "finance can invoice every tenant for what it used while budgets hold under load"
).split()
VOCABULARY = tuple(dict.fromkeys(WORDS))
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
class _Choice:
    text_tokens: list[str]
    finish_reason: str
    tool_call: JSON | None
    logprobs: list[JSON] | None  # ``logprobs.content`` when asked for


@dataclass(frozen=True, slots=True)
class _Plan:
    choices: list[_Choice]
    usage: Usage  # all choices together: a real provider bills every choice's tokens


@dataclass(frozen=True, slots=True)
class _Draft:
    visible: int
    reasoning: int
    finish_reason: str
    tool_call: JSON | None


def _written(draft: _Draft, rng: random.Random, shape: ChoiceShape) -> _Choice:
    """A choice's words (none for a tool call) and, when asked, their log probabilities."""
    words = [("" if i == 0 else " ") + rng.choice(WORDS) for i in range(draft.visible)]
    if draft.tool_call:
        words = []  # drawn all the same: the same seed gives the same answers as before
    if not shape.logprobs:
        return _Choice(words, draft.finish_reason, draft.tool_call, None)
    logprobs = token_logprobs(words, shape.top_logprobs, rng, VOCABULARY)
    return _Choice(words, draft.finish_reason, draft.tool_call, logprobs)


class MockProvider:
    kind = "mock"

    def __init__(
        self,
        name: str,
        options: MockOptions,
        reasoning_models: frozenset[str] = frozenset(),
        forward: ForwardHeaders | None = None,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self._options = options
        self._reasoning = reasoning_models
        self._counter = 0
        self._forward = forward if forward is not None and forward.any() else None
        # with forward_*_header configured: the headers each request would have carried
        # upstream (the last 100), so that tests can see who the gateway said was calling
        self.received: deque[dict[str, str]] = deque(maxlen=100)

        self._api_key = api_key  # its configured key (env:NAME), if any
        # the key the last request came with (the vault's, a tenant's own, or its own), so
        # tests can tell which key a request used; kept in memory only, never logged
        self.last_api_key: str | None = None

    def _note(self, request: ChatRequest | EmbedRequest) -> None:
        assert self._forward is not None
        self.received.append(dict(self._forward.added(request.headers or {}, request.caller)))

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
    def _plan(self, body: JSON, rng: random.Random, shape: ChoiceShape) -> _Plan:
        model = str(body.get("model", ""))
        prompt = estimate_messages(body.get("messages"))
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        limit = int(cap) if isinstance(cap, int) and cap > 0 else None  # per choice
        drafts = [self._draft(body, rng, model in self._reasoning, limit)]
        cached = 0
        if prompt >= CACHE_MIN_PROMPT and rng.random() < 0.5:
            cached = (prompt // CACHE_BLOCK) * CACHE_BLOCK
        choices = [_written(drafts[0], rng, shape)]
        for _ in range(1, shape.n):
            drafts.append(self._draft(body, rng, model in self._reasoning, limit))
            choices.append(_written(drafts[-1], rng, shape))
        reasoning = sum([d.reasoning for d in drafts]) if shape.n > 1 else drafts[0].reasoning
        visible = sum([d.visible for d in drafts]) if shape.n > 1 else drafts[0].visible
        usage = Usage(
            input_tokens=prompt,
            cached_input_tokens=cached,
            output_tokens=visible + reasoning,
            reasoning_tokens=reasoning,
        )
        return _Plan(choices, usage)

    def _draft(self, body: JSON, rng: random.Random, reasons: bool, limit: int | None) -> _Draft:
        """One choice's length, reasoning and tool call, before its words are drawn."""
        tool_call = _tool_call(body, rng)
        want = 12 if tool_call else self._length(rng)
        reasoning = rng.randint(want // 4, want) if reasons else 0
        visible = want
        finish = "tool_calls" if tool_call else "stop"
        if limit is not None and reasoning + visible > limit:
            reasoning = min(reasoning, limit // 2)
            visible = max(limit - reasoning, 0)
            finish = "length"
        return _Draft(visible, reasoning, finish, tool_call)

    # Provider protocol -----------------------------------------------------------
    async def _planned(self, request: ChatRequest) -> tuple[random.Random, _Plan]:
        """Check the request, wait as configured, fail when drawn to, then plan the answer."""
        self.last_api_key = request.api_key or self._api_key
        shape = choice_shape(request.body, self.name)
        check_tools(request.body, self.name)
        rng = self._rng(request.body)
        await self._delay(rng)
        self._fail_maybe(rng)
        return rng, self._plan(request.body, rng, shape)

    async def chat(self, request: ChatRequest) -> ChatResult:
        if self._forward is not None:
            self._note(request)
        started = time.perf_counter()
        rng, plan = await self._planned(request)
        if self._options.tokens_per_second:
            words = sum(len(c.text_tokens) for c in plan.choices)
            await asyncio.sleep(words / self._options.tokens_per_second)
        body: JSON = {
            "id": _completion_id(rng),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.body.get("model"),
            "choices": [_message_choice(i, c) for i, c in enumerate(plan.choices)],
            "usage": to_openai(plan.usage),
            "system_fingerprint": "fp_farebox_mock",
        }
        elapsed = (time.perf_counter() - started) * 1000
        return ChatResult(body=body, usage=plan.usage, upstream_ms=elapsed)

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        if self._forward is not None:
            self._note(request)
        rng, plan = await self._planned(request)
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
        for index in range(len(plan.choices)):
            yield _chunk(base, first, None, index)
        delay = 1.0 / o.tokens_per_second if o.tokens_per_second else 0
        for sent, chunk in enumerate(_token_chunks(base, plan.choices), start=1):
            if delay:
                await asyncio.sleep(delay)
            yield chunk
            if cut and sent >= cut:
                raise UpstreamError("mock provider dropped the stream", upstream_status=0)
        for index, choice in enumerate(plan.choices):
            if choice.tool_call:
                call = {"tool_calls": [{"index": 0, **choice.tool_call}]}
                yield _chunk(base, call, None, index)
            yield _chunk(base, {}, choice.finish_reason, index)
        usage_chunk = {**base, "choices": [], "usage": to_openai(plan.usage)}
        yield UsageReport(usage=plan.usage, chunk=usage_chunk)

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        if self._forward is not None:
            self._note(request)
        self.last_api_key = request.api_key or self._api_key
        size = embedding_size(request.body, self.name)
        rng = self._rng(request.body)
        await _pause(self._options.latency_ms)
        self._fail_maybe(rng)
        inputs = request.body.get("input")
        items = inputs if isinstance(inputs, list) and not _is_tokens(inputs) else [inputs]
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


def _chunk(base: JSON, delta: JSON, finish: str | None, index: int = 0) -> JSON:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**base, "choices": [choice], "usage": None}


def _token_chunks(base: JSON, choices: list[_Choice]) -> Iterable[JSON]:
    """One chunk per token, in the order a real upstream streams them: round robin over the
    choices, each token with its ``logprobs`` entry when they were asked for."""
    if len(choices) == 1 and choices[0].logprobs is None:
        return (_chunk(base, {"content": word}, None) for word in choices[0].text_tokens)
    return (
        _logprob_chunk(base, index, choice, at)
        for at in range(max(len(c.text_tokens) for c in choices))
        for index, choice in enumerate(choices)
        if at < len(choice.text_tokens)
    )


def _logprob_chunk(base: JSON, index: int, choice: _Choice, at: int) -> JSON:
    chunk = _chunk(base, {"content": choice.text_tokens[at]}, None, index)
    if choice.logprobs is not None:
        chunk["choices"][0]["logprobs"] = {"content": [choice.logprobs[at]], "refusal": None}
    return chunk


def _message_choice(index: int, choice: _Choice) -> JSON:
    message: JSON = {"role": "assistant", "content": "".join(choice.text_tokens) or None}
    if choice.tool_call:
        message["tool_calls"] = [choice.tool_call]
    message["refusal"] = None
    logprobs = None
    if choice.logprobs is not None:
        content = choice.logprobs if choice.text_tokens else None
        logprobs = {"content": content, "refusal": None}
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": choice.finish_reason,
    }


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
    functions = [t["function"] for t in tools if t.get("type") == "function"]  # checked shapes
    if not functions:
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        functions = [f for f in functions if f.get("name") == wanted] or functions
    fn = functions[0]
    params = fn.get("parameters") or {}
    props = params.get("properties")
    required = params.get("required")
    if not (isinstance(required, list) and required):
        required = list(props)[:1] if isinstance(props, dict) else []
    args = {name: "mock" for name in required if isinstance(name, str)}
    return {
        "id": f"call_mock{rng.getrandbits(48):012x}",
        "type": "function",
        "function": {"name": fn["name"], "arguments": orjson.dumps(args).decode()},
    }
