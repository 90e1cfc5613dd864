"""A cached answer, given back: as a whole body in the client's format, or replayed as a
stream (OpenAI chunks synthesised from the stored ``chat.completion`` and fed through the
same renderer as a live stream, so each format's events are exactly those of a live one).

A replay carries the original's token counts in its usage, and a cost of 0 (the hit cost
the platform nothing); its ids are the request's own."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import orjson

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry
from farebox.core.usage import from_openai, to_openai, token_counts
from farebox.gateway.render import render_body, stream_renderer

JSON = dict[str, Any]
PIECES = 4  # a replayed text arrives in at most this many chunks
MIN_PIECE = 16  # characters; shorter texts arrive whole


def shown_entry(entry: LedgerEntry, completion: Mapping[str, Any]) -> LedgerEntry:
    """The hit's entry as its reply shows it: the original's token counts (the ledger's
    are 0: no model read anything), cost 0."""
    counts: dict[str, Any] = token_counts(from_openai(completion.get("usage")))
    return dataclasses.replace(entry, **counts)  # only what the renderers read differs


def completion_for(stored: bytes, request_id: str, now: float) -> JSON:
    """The stored ``chat.completion`` with this request's id and time."""
    completion = orjson.loads(stored)
    if not isinstance(completion, dict):
        raise TypeError("a cached answer is not a chat.completion object")
    completion["id"] = "chatcmpl-" + request_id.removeprefix("req_")
    completion["created"] = int(now)
    return completion


def hit_body(flavor: str, completion: JSON, request_id: str, shown: LedgerEntry,
             echo: JSON | None) -> bytes:  # fmt: skip
    """The whole reply body of a hit, in the client's format."""
    if flavor == "openai":
        usage = completion.get("usage")
        usage = dict(usage) if isinstance(usage, dict) else to_openai(from_openai(None))
        usage["farebox_cost_usd"] = format_usd(0)
        completion["usage"] = usage
    return render_body(flavor, completion, request_id, shown, echo)


def chunks_of(completion: Mapping[str, Any]) -> Iterator[JSON]:
    """The OpenAI ``chat.completion.chunk`` objects a live stream of ``completion`` would
    have had: per choice its role, reasoning, content in a few pieces, each tool call and
    the finish reason (no usage chunk: the caller adds it)."""
    ident = {"id": completion.get("id"), "object": "chat.completion.chunk",
             "created": completion.get("created"), "model": completion.get("model")}  # fmt: skip
    for choice in completion.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        for delta in _deltas(message):
            yield {**ident, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}
        finish = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        if choice.get("logprobs") is not None:
            finish["logprobs"] = choice["logprobs"]
        yield {**ident, "choices": [finish]}


def _deltas(message: Mapping[str, Any]) -> Iterator[JSON]:
    yield {"role": message.get("role") or "assistant", "content": ""}
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        yield {"reasoning_content": reasoning}
    content = message.get("content")
    if isinstance(content, str):
        for piece in _pieces(content):
            yield {"content": piece}
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        yield {"refusal": refusal}
    for i, call in enumerate(message.get("tool_calls") or ()):
        if isinstance(call, dict):
            yield {"tool_calls": [{"index": i, **call}]}


def _pieces(text: str) -> Iterator[str]:
    if len(text) < MIN_PIECE:
        if text:
            yield text
        return
    size = -(-len(text) // PIECES)
    for start in range(0, len(text), size):
        yield text[start : start + size]


async def replay(flavor: str, body: Mapping[str, Any], completion: JSON, request_id: str,
                 shown: LedgerEntry, echo: JSON | None) -> AsyncIterator[bytes]:  # fmt: skip
    """The stream of a hit in the client's format, with its usage where the format carries
    it (OpenAI and legacy completions: when the client asked, ``stream_options``)."""
    model = str(completion.get("model") or shown.model_served)
    out = stream_renderer(flavor, body, model, request_id, echo)
    for chunk in chunks_of(completion):
        if data := out.chunk(chunk):
            yield data
    usage = completion.get("usage")
    last = {"id": completion.get("id"), "object": "chat.completion.chunk",
            "created": completion.get("created", int(time.time())), "model": model,
            "choices": [], "usage": usage if isinstance(usage, dict) else {}}  # fmt: skip
    if data := out.usage(last, shown):
        yield data
    if data := out.done():
        yield data
