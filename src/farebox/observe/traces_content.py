"""Prompt and completion text for a trace, only for a plan with ``observe.record_content: true``.

The GenAI conventions' ``gen_ai.input.messages`` and ``gen_ai.output.messages``, recorded on a
span as JSON strings (``[{"role", "parts": [{"type": "text", "content"}]}]``). Bounded: the text
of one attribute stops at ``MAX_CONTENT_CHARS`` (the part that reaches it is cut, the messages
after it are dropped, and ``farebox.content_truncated`` says so). Images, audio and files are
recorded by their type only, never their data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

MAX_CONTENT_CHARS = 8192  # text characters per attribute
JSON = dict[str, Any]


class Budget:
    """How much text an attribute may still take."""

    __slots__ = ("left", "truncated")

    def __init__(self, chars: int) -> None:
        self.left = chars
        self.truncated = False

    def take(self, text: str) -> str:
        if len(text) > self.left:
            text, self.truncated = text[: self.left], True
        self.left -= len(text)
        return text


def input_messages(messages: Any, chars: int = MAX_CONTENT_CHARS) -> tuple[str, bool]:
    """The chat messages sent, as ``gen_ai.input.messages``; and whether they were cut."""
    budget = Budget(chars)
    out: list[JSON] = []
    for message in messages if isinstance(messages, list) else ():
        if budget.left <= 0:
            budget.truncated = True
            break
        if isinstance(message, Mapping):
            out.append({"role": str(message.get("role")), "parts": _parts(message, budget)})
    return orjson.dumps(out).decode(), budget.truncated


def output_messages(body: Mapping[str, Any], chars: int = MAX_CONTENT_CHARS) -> tuple[str, bool]:
    """The choices of a chat completion, as ``gen_ai.output.messages``."""
    budget = Budget(chars)
    out: list[JSON] = []
    if isinstance(body.get("output"), list):  # a Responses object (a native deployment's)
        return _responses_output(body["output"], budget), budget.truncated
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        parts = _parts(message, budget) if isinstance(message, Mapping) else []
        entry = {"role": "assistant", "parts": parts}
        entry["finish_reason"] = str(choice.get("finish_reason") or "")
        out.append(entry)
    return orjson.dumps(out).decode(), budget.truncated


def _responses_output(items: list[Any], budget: Budget) -> str:
    """The ``message`` items of a Responses object's ``output``, as output messages."""
    out: list[JSON] = []
    for item in items:
        if isinstance(item, Mapping) and item.get("type") == "message":
            content = item.get("content")
            parts = (
                [_part(c, budget) for c in content if isinstance(c, Mapping)]
                if isinstance(content, list)
                else []
            )
            out.append({"role": "assistant", "parts": parts})
    return orjson.dumps(out).decode()


class StreamText:
    """The text of a streamed completion, gathered chunk by chunk (chat chunks, or a native
    Responses stream's ``response.output_text.delta`` events), within the same bound."""

    __slots__ = ("_budget", "_reasons", "_texts")

    def __init__(self, chars: int = MAX_CONTENT_CHARS) -> None:
        self._budget = Budget(chars)
        self._texts: dict[int, list[str]] = {}
        self._reasons: dict[int, str] = {}

    def see(self, chunk: Mapping[str, Any]) -> None:
        delta = chunk.get("delta")
        if isinstance(delta, str) and chunk.get("type") == "response.output_text.delta":
            self._texts.setdefault(0, []).append(self._budget.take(delta))
            return
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index")
            index = index if isinstance(index, int) else 0
            piece = choice.get("delta")
            text = piece.get("content") if isinstance(piece, Mapping) else None
            if isinstance(text, str) and text:
                self._texts.setdefault(index, []).append(self._budget.take(text))
            if choice.get("finish_reason"):
                self._reasons[index] = str(choice["finish_reason"])

    def messages(self) -> tuple[str, bool]:
        """As ``gen_ai.output.messages``; and whether the text was cut."""
        out = [
            {"role": "assistant",
             "parts": [{"type": "text", "content": "".join(self._texts.get(i, ()))}],
             "finish_reason": self._reasons.get(i, "")}
            for i in sorted(self._texts.keys() | self._reasons.keys())
        ]  # fmt: skip
        return orjson.dumps(out).decode(), self._budget.truncated


def _parts(message: Mapping[str, Any], budget: Budget) -> list[JSON]:
    parts: list[JSON] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append({"type": "text", "content": budget.take(content)})
    for item in content if isinstance(content, list) else ():
        if isinstance(item, Mapping):
            parts.append(_part(item, budget))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, Mapping):
            parts.append(_tool_call(call, budget))
    if message.get("role") == "tool":
        text = parts[0].get("content", "") if parts else ""
        return [{"type": "tool_call_response", "id": str(message.get("tool_call_id")),
                 "result": text}]  # fmt: skip
    return parts


def _tool_call(call: Mapping[str, Any], budget: Budget) -> JSON:
    function = call.get("function")
    function = function if isinstance(function, Mapping) else {}
    arguments = function.get("arguments")
    return {
        "type": "tool_call",
        "id": str(call.get("id")),
        "name": str(function.get("name")),
        "arguments": budget.take(arguments if isinstance(arguments, str) else ""),
    }


def _part(item: Mapping[str, Any], budget: Budget) -> JSON:
    kind = str(item.get("type") or "")
    text = item.get("text")
    if isinstance(text, str):  # text, input_text, output_text
        return {"type": "text", "content": budget.take(text)}
    return {"type": kind}  # image, audio, file: the kind only, never the data
