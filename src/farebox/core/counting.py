"""Offline input-token counts for the counting endpoints (``/v1/messages/count_tokens``,
``/v1/responses/input_tokens``), made with the estimator that sizes reservations
(``farebox.core.tokens``): a request is turned into the chat messages the request path
would estimate, plus its tool definitions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from farebox.core.tokens import estimate_messages, estimate_text

IMAGE_TEXT = "x" * 340  # ~85 tokens, as ``core.tokens`` sizes an image part


def estimate_tools(tools: Any) -> int:
    """The tool definitions a model reads: about their JSON size."""
    if not isinstance(tools, list) or not tools:
        return 0
    return estimate_text(json.dumps(tools, separators=(",", ":"), ensure_ascii=False))


def estimate_chat_input(messages: Any, tools: Any = None) -> int:
    """Chat messages (OpenAI shape) and their tools."""
    return estimate_messages(messages) + estimate_tools(tools)


def _part_text(part: Any) -> str:
    if not isinstance(part, Mapping):
        return ""
    for field in ("text", "refusal"):
        value = part.get(field)
        if isinstance(value, str):
            return value
    if part.get("type") in ("input_image", "input_file", "input_audio"):
        return IMAGE_TEXT
    return ""


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(p) for p in content)
    return ""


def _summary(item: Mapping[str, Any]) -> str:
    parts: Iterable[Any] = item.get("summary") or ()
    return "".join(_part_text(p) for p in parts if isinstance(p, Mapping))


def response_messages(input_: Any, instructions: Any = None) -> list[dict[str, Any]]:
    """A Responses API ``input`` (a string or a list of items) and its ``instructions`` as
    the chat messages the estimator reads. Items it does not know add nothing."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(input_, str):
        messages.append({"role": "user", "content": input_})
        return messages
    for item in input_ if isinstance(input_, list) else ():
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _content(item.get("content"))})
        elif kind == "function_call":
            call = {"name": item.get("name"), "arguments": item.get("arguments")}
            messages.append({"role": "assistant", "tool_calls": [{"function": call}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": _content(item.get("output"))})
        elif kind == "reasoning":
            messages.append({"role": "assistant", "content": _summary(item)})
    return messages


def estimate_response_input(input_: Any, instructions: Any = None, tools: Any = None) -> int:
    """A Responses API request's input tokens, as the reservation estimator counts them."""
    return estimate_chat_input(response_messages(input_, instructions), tools)
