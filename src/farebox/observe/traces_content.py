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


def _parts(message: Mapping[str, Any], budget: Budget) -> list[JSON]:
    parts: list[JSON] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append({"type": "text", "content": budget.take(content)})
    for item in content if isinstance(content, list) else ():
        if isinstance(item, Mapping):
            parts.append(_part(item, budget))
    for call in message.get("tool_calls") or ():
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
    if isinstance(text, str):
        return {"type": "text", "content": budget.take(text)}
    return {"type": kind}  # image, audio, file: the kind only, never the data
