"""A fake OpenAI upstream speaking the real wire format (wire-formats.md section 7).

Usage::

    async with OpenAIUpstream() as upstream:
        provider = OpenAIProvider("oai", upstream.base_url, "sk-test", http)
        upstream.reply_chat("Hi", usage=usage(10, 2, cached=4))
        upstream.reply_stream(["Hel", "lo"], usage=usage(9, 2))
        upstream.reply_error(429, "Rate limit reached", headers={"retry-after": "3"})
        ...
        upstream.last.json, upstream.last.headers, upstream.calls

Unscripted requests get a default chat completion, stream or embeddings list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from fakes import FakeUpstream, Recorded, Reply

JSON = dict[str, Any]
MODEL = "gpt-4.1-2025-04-14"
CREATED = 1763805600


def usage(prompt: int = 9, completion: int = 2, *, cached: int = 0, reasoning: int = 0) -> JSON:
    """An OpenAI chat ``usage`` object with both details objects."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def tool_call(call_id: str, name: str, arguments: JSON) -> JSON:
    function = {"name": name, "arguments": orjson.dumps(arguments).decode()}
    return {"id": call_id, "type": "function", "function": function}


def chat_completion(
    content: str | None = "Hello",
    *,
    usage_: JSON | None = None,
    tool_calls: list[JSON] | None = None,
    finish_reason: str | None = None,
    model: str = MODEL,
) -> JSON:
    message: JSON = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    finish = finish_reason or ("tool_calls" if tool_calls else "stop")
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_x",
        "choices": [choice],
        "usage": usage_ if usage_ is not None else usage(),
    }


def chunk(delta: JSON, finish_reason: str | None = None, model: str = MODEL) -> JSON:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_x",
        "choices": [choice],
        "usage": None,
    }


def usage_chunk(usage_: JSON, model: str = MODEL) -> JSON:
    return {**chunk({}, model=model), "choices": [], "usage": usage_}


def frame(data: JSON | str) -> bytes:
    """One SSE frame exactly as OpenAI sends it: ``data: ...`` and a blank line, no event."""
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return b"data: " + payload + b"\n\n"


def stream_chunks(
    texts: Sequence[str] = ("Hel", "lo"),
    *,
    tool_calls: list[JSON] | None = None,
    finish_reason: str | None = None,
) -> list[JSON]:
    """The chunks of a streamed answer, without the usage chunk."""
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": text}) for text in texts]
    for index, call in enumerate(tool_calls or []):
        start = {**call, "index": index, "function": {**call["function"], "arguments": ""}}
        chunks.append(chunk({"tool_calls": [start]}))
        args = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        chunks.append(chunk({"tool_calls": [args]}))
    finish = finish_reason or ("tool_calls" if tool_calls else "stop")
    chunks.append(chunk({}, finish))
    return chunks


class OpenAIUpstream(FakeUpstream):
    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def reply_chat(self, content: str | None = "Hello", **kwargs: Any) -> None:
        usage_ = kwargs.pop("usage", None)
        headers = kwargs.pop("headers", {})
        body = chat_completion(content, usage_=usage_, **kwargs)
        self.push(Reply(body=body, headers=headers))

    def reply_error(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": type, "param": None, "code": code}
        self.push(Reply(status=status, body={"error": error}, headers=headers or {}))

    def reply_stream(
        self,
        texts: Sequence[str] = ("Hel", "lo"),
        *,
        usage: JSON | None = None,
        tool_calls: list[JSON] | None = None,
        error: JSON | None = None,
        disconnect_after: int | None = None,
        done: bool = True,
    ) -> None:
        """A stream; ``error`` is sent (and the stream ended) right after the first chunk."""
        chunks: list[JSON | str] = list(stream_chunks(texts, tool_calls=tool_calls))
        if error is not None:
            chunks = [chunks[0], {"error": error}]
            done = False
        elif usage is not None:
            chunks.append(usage_chunk(usage))
        if done:
            chunks.append("[DONE]")
        frames = [frame(item) for item in chunks]
        self.push(Reply(frames=frames, disconnect_after=disconnect_after))

    def reply_embeddings(self, vectors: list[list[float]], prompt_tokens: int = 8) -> None:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        token_usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        body = {"object": "list", "data": data, "model": "text-embedding-3-small"}
        self.push(Reply(body={**body, "usage": token_usage}))

    def default_reply(self, request: Recorded) -> Reply:
        if request.path == "/v1/embeddings":
            vector = {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}
            body = {"object": "list", "data": [vector], "model": "text-embedding-3-small"}
            return Reply(body={**body, "usage": {"prompt_tokens": 8, "total_tokens": 8}})
        if request.path != "/v1/chat/completions":
            return super().default_reply(request)
        if not (request.json or {}).get("stream"):
            return Reply(body=chat_completion())
        chunks: list[JSON | str] = [*stream_chunks(), usage_chunk(usage()), "[DONE]"]
        return Reply(frames=[frame(item) for item in chunks])
