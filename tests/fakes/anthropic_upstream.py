"""A fake Anthropic upstream speaking the real wire format (wire-formats.md section 8).

Usage::

    async with AnthropicUpstream() as upstream:
        provider = AnthropicProvider("claude", upstream.base_url, "sk-ant-test", http)
        upstream.reply_message([text_block("Hi")], usage=usage(25, 120, read=12000))
        upstream.reply_stream(["Hel", "lo"], start_usage=usage(25, 1), delta_usages=[...])
        upstream.reply_error(529, "overloaded_error", "Overloaded")
        ...
        upstream.last.json, upstream.last.headers, upstream.calls

Streams are ``event: <name>`` / ``data: <json>`` frames ending with ``message_stop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from fakes import FakeUpstream, Recorded, Reply

JSON = dict[str, Any]
MODEL = "claude-sonnet-4-5"


def usage(
    input_tokens: int = 25,
    output_tokens: int = 120,
    *,
    read: int = 0,
    write_5m: int = 0,
    write_1h: int = 0,
) -> JSON:
    """An Anthropic ``usage`` object (``input_tokens`` excludes cache tokens)."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        },
        "service_tier": "standard",
    }


def text_block(text: str) -> JSON:
    return {"type": "text", "text": text}


def tool_use_block(block_id: str, name: str, input_: JSON) -> JSON:
    return {"type": "tool_use", "id": block_id, "name": name, "input": input_}


def message(
    content: list[JSON] | None = None,
    *,
    usage_: JSON | None = None,
    stop_reason: str = "end_turn",
    model: str = MODEL,
) -> JSON:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content if content is not None else [text_block("Hello")],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_ if usage_ is not None else usage(),
    }


def frame(event: str, data: JSON) -> bytes:
    """One named SSE frame exactly as Anthropic sends it."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_body(error_type: str, text: str) -> JSON:
    return {"type": "error", "error": {"type": error_type, "message": text}, "request_id": "req_1"}


def stream_events(
    texts: Sequence[str] = ("Hel", "lo"),
    *,
    tools: Sequence[tuple[str, str, Sequence[str]]] = (),
    start_usage: JSON | None = None,
    delta_usages: Sequence[JSON] = ({"output_tokens": 120},),
    stop_reason: str | None = None,
) -> list[tuple[str, JSON]]:
    """(event, data) pairs of a full stream: text block, tool_use blocks, message_delta(s).

    ``tools`` are (id, name, partial_json fragments). Each of ``delta_usages`` becomes one
    ``message_delta`` event carrying that CUMULATIVE usage.
    """
    start = {**message([], usage_=start_usage or usage(25, 1)), "stop_reason": None}
    events: list[tuple[str, JSON]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    events += _text_events(0, texts)
    for offset, (block_id, name, fragments) in enumerate(tools, start=1):
        events += _tool_events(offset, block_id, name, fragments)
    stop = stop_reason or ("tool_use" if tools else "end_turn")
    for delta_usage in delta_usages:
        delta = {"stop_reason": stop, "stop_sequence": None}
        events.append(
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage})
        )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _text_events(index: int, texts: Sequence[str]) -> list[tuple[str, JSON]]:
    start = {"type": "content_block_start", "index": index, "content_block": text_block("")}
    events: list[tuple[str, JSON]] = [("content_block_start", start), ("ping", {"type": "ping"})]
    for text in texts:
        delta = {"type": "text_delta", "text": text}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _tool_events(
    index: int, block_id: str, name: str, fragments: Sequence[str]
) -> list[tuple[str, JSON]]:
    block = {"type": "tool_use", "id": block_id, "name": name, "input": {}}
    start = {"type": "content_block_start", "index": index, "content_block": block}
    events: list[tuple[str, JSON]] = [("content_block_start", start)]
    for fragment in fragments:
        delta = {"type": "input_json_delta", "partial_json": fragment}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


class AnthropicUpstream(FakeUpstream):
    @property
    def base_url(self) -> str:
        return self.root_url

    def reply_message(self, content: list[JSON] | None = None, **kwargs: Any) -> None:
        usage_ = kwargs.pop("usage", None)
        self.push(Reply(body=message(content, usage_=usage_, **kwargs)))

    def reply_error(
        self, status: int, error_type: str, text: str, headers: dict[str, str] | None = None
    ) -> None:
        self.push(Reply(status=status, body=error_body(error_type, text), headers=headers or {}))

    def reply_events(
        self, events: Sequence[tuple[str, JSON]], *, disconnect_after: int | None = None
    ) -> None:
        frames = [frame(name, data) for name, data in events]
        self.push(Reply(frames=frames, disconnect_after=disconnect_after))

    def reply_stream(self, texts: Sequence[str] = ("Hel", "lo"), **kwargs: Any) -> None:
        disconnect_after = kwargs.pop("disconnect_after", None)
        self.reply_events(stream_events(texts, **kwargs), disconnect_after=disconnect_after)

    def reply_stream_error(
        self, error_type: str = "overloaded_error", text: str = "Overloaded"
    ) -> None:
        """A stream that starts fine, then sends ``event: error`` after the first text delta."""
        events = stream_events(["Hel"])[:4]
        events.append(("error", error_body(error_type, text)))
        self.reply_events(events)

    def reply_count(self, input_tokens: int) -> None:
        """Script the next ``/v1/messages/count_tokens`` answer."""
        self.push(Reply(body={"input_tokens": input_tokens}))

    def default_reply(self, request: Recorded) -> Reply:
        if request.path == "/v1/messages/count_tokens":
            return count_reply(request.json or {})
        if request.path != "/v1/messages":
            return Reply(status=404, body=error_body("not_found_error", "Not found"))
        if not (request.json or {}).get("stream"):
            return Reply(body=message())
        return Reply(frames=[frame(name, data) for name, data in stream_events()])


# The fields Anthropic's ``MessageCountTokensParams`` takes: any other is refused, as upstream.
COUNT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
        "context_management",
        "output_format",
    }
)


def count_reply(body: JSON) -> Reply:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, N one per 3 bytes of the
    messages, system and tools (deterministic, and unlike the gateway's own estimate)."""
    extra = sorted(set(body) - COUNT_FIELDS)
    if extra or "messages" not in body or "model" not in body:
        problem = f"{extra[0]}: Extra inputs are not permitted" if extra else "missing field"
        return Reply(status=400, body=error_body("invalid_request_error", problem))
    size = sum(len(orjson.dumps(body.get(k))) for k in ("messages", "system", "tools"))
    return Reply(body={"input_tokens": size // 3 + 7})
