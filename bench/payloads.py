"""Fixed, valid OpenAI response bodies for the mock upstream."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:
    import orjson

    json_loads: Callable[[bytes], Any] = orjson.loads

    def json_dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - orjson is a gateway dependency
    json_loads = json.loads

    def json_dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


CREATED = 1_700_000_000
CHAT_ID = "chatcmpl-farebox-bench"
FINGERPRINT = "fp_bench"
CONTENT_TOKENS = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
PROMPT_TOKENS = 8


def usage(prompt: int = PROMPT_TOKENS, completion: int = len(CONTENT_TOKENS)) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat(model: str) -> bytes:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(CONTENT_TOKENS),
        "refusal": None,
        "annotations": [],
    }
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    return json_dumps(
        {
            "id": CHAT_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [choice],
            "usage": usage(),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


def _chunk(model: str, choices: list[Any], with_usage: bool, usage_value: Any = None) -> bytes:
    body: dict[str, Any] = {
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
    }
    if with_usage:
        body["usage"] = usage_value
    return b"data: " + json_dumps(body) + b"\n\n"


def _delta_choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


def stream_events(model: str, include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed completion, byte-exact OpenAI framing."""
    first = {"role": "assistant", "content": "", "refusal": None}
    events = [_chunk(model, _delta_choice(first), include_usage)]
    for token in CONTENT_TOKENS:
        events.append(_chunk(model, _delta_choice({"content": token}), include_usage))
    events.append(_chunk(model, _delta_choice({}, "stop"), include_usage))
    if include_usage:
        events.append(_chunk(model, [], True, usage()))
    events.append(b"data: [DONE]\n\n")
    return events


def embeddings(model: str, count: int, dims: int) -> bytes:
    vector = [round(((i * 7919) % 2000) / 1000.0 - 1.0, 6) for i in range(dims)]
    data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)]
    tokens = 5 * count
    return json_dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def models_body() -> bytes:
    names = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    data = [{"id": n, "object": "model", "created": CREATED, "owned_by": "bench"} for n in names]
    return json_dumps({"object": "list", "data": data})


def error_body(message: str, code: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return json_dumps({"error": error})
