"""Pure stream translation, reverse direction: OpenAI chunks -> Anthropic stream events. No I/O.

Serves an Anthropic-SDK client from an OpenAI-format stream. :class:`OpenAIStreamToAnthropic`
turns ``chat.completion.chunk`` dicts into ``(event_name, data)`` pairs; :func:`encode` frames
one pair as Anthropic SSE (``event: NAME`` / ``data: {json}``; there is no ``[DONE]``).
"""

from __future__ import annotations

import orjson

from farebox.core.usage import Usage, from_openai
from farebox.providers.translate import JSON, STOP_REASONS

Event = tuple[str, JSON]


def encode(event: str, data: JSON) -> bytes:
    """One Anthropic SSE frame: ``event: NAME\\ndata: {json}\\n\\n``."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def anthropic_usage(usage: Usage) -> JSON:
    """Cumulative Anthropic usage counts; ``input_tokens`` excludes cache reads and writes."""
    out: JSON = {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_5m_tokens + usage.cache_write_1h_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


class OpenAIStreamToAnthropic:
    """Turns OpenAI ``chat.completion.chunk`` dicts into Anthropic stream events.

    Call :meth:`start` once, :meth:`feed` every chunk in order, then :meth:`finish` (or
    :meth:`error` for a terminal failure). Each returns ``(event_name, data)`` pairs whose
    ``data["type"]`` equals the event name. Only choice 0 is translated. Text becomes a
    ``text`` block; each OpenAI tool-call index becomes its own ``tool_use`` block; a new
    block closes the open one. ``usage`` holds the usage the chunks reported, if any.
    """

    def __init__(self, *, model: str, message_id: str, input_tokens: int = 0) -> None:
        self.model = model
        self.message_id = message_id
        self.input_tokens = input_tokens
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.started = False
        self.finished = False
        self._blocks = 0  # Anthropic content blocks opened so far
        self._open: int | None = None  # index of the open block
        self._open_text = False  # whether the open block is a text block
        self._tools: dict[int, int] = {}  # OpenAI tool_call index -> Anthropic block index

    @property
    def stop_reason(self) -> str:
        return STOP_REASONS.get(str(self.finish_reason), "end_turn")

    def start(self) -> list[Event]:
        """The ``message_start`` event (empty once already started)."""
        if self.started:
            return []
        self.started = True
        message: JSON = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        return [("message_start", {"type": "message_start", "message": message})]

    @staticmethod
    def ping() -> Event:
        """A ``ping`` event (the SDK skips it): a keep-alive for long pauses."""
        return ("ping", {"type": "ping"})

    def feed(self, chunk: JSON) -> list[Event]:
        """The events for one chunk; starts the message first if :meth:`start` was not called."""
        if self.finished:
            return []
        events = self.start()
        if chunk.get("usage"):
            self.usage = from_openai(chunk["usage"])
        choice = _first_choice(chunk.get("choices"))
        if choice is None:
            return events
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            events.extend(self._text(text))
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                events.extend(self._tool_call(call))
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        return events

    def finish(self, usage: Usage | None = None) -> list[Event]:
        """Close the open block, then ``message_delta`` and ``message_stop``.

        ``usage`` (what the gateway metered) wins over the usage the chunks reported.
        """
        if self.finished:
            return []
        events = self.start()
        events.extend(self._close())
        self.finished = True
        known = usage if usage is not None else self.usage
        counts = anthropic_usage(known) if known is not None else {"output_tokens": 0}
        delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": counts}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def error(self, message: str, kind: str = "api_error") -> Event:
        """A terminal ``error`` event (e.g. ``overloaded_error``); nothing follows it."""
        self.finished = True
        return ("error", {"type": "error", "error": {"type": kind, "message": message}})

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or not self._open_text:
            events.extend(self._open_block({"type": "text", "text": ""}, text=True))
        delta = {"type": "text_delta", "text": text}
        events.append(_delta(self._open_index(), delta))
        return events

    def _tool_call(self, call: JSON) -> list[Event]:
        events: list[Event] = []
        position = call.get("index")
        position = position if isinstance(position, int) else len(self._tools)
        function = call.get("function") or {}
        index = self._tools.get(position)
        if index is None:
            block: JSON = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
            block["id"] = block["id"] or f"toolu_{self.message_id}_{position}"
            block["name"] = block["name"] or ""
            block["input"] = {}
            events.extend(self._open_block(block, text=False))
            index = self._tools[position] = self._open_index()
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # A fragment for an already-closed call (no OpenAI upstream interleaves calls)
            # still goes to that call's block: the SDK accumulates deltas by block index.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events.append(_delta(index, delta))
        return events

    def _open_block(self, block: JSON, *, text: bool) -> list[Event]:
        events = self._close()
        self._open, self._open_text = self._blocks, text
        self._blocks += 1
        data = {"type": "content_block_start", "index": self._open, "content_block": block}
        events.append(("content_block_start", data))
        return events

    def _open_index(self) -> int:
        assert self._open is not None
        return self._open

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        index, self._open, self._open_text = self._open, None, False
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]


def _first_choice(choices: object) -> JSON | None:
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index") in (0, None):
            return choice
    return None


def _delta(index: int, delta: JSON) -> Event:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
