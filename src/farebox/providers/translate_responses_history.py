"""Pure helpers for stored Responses (``previous_response_id``). No I/O.

A continued response is answered as if the client had sent the whole conversation: the stored
response's input items, then its output items turned back into input items, then the new
request's input. What is stored of an answer is split here from the Responses object."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
# what a Responses object holds besides its own fields (kept as the stored ``details``)
OWN = ("id", "object", "created_at", "model", "output", "usage")


def input_items(value: str | list[JSON]) -> list[JSON]:
    """A request's ``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value)


def output_as_input(output: list[JSON]) -> list[JSON]:
    """The output items of an answer as the input items that send it back: assistant
    messages with their ``output_text`` (or refusal) parts, function calls, reasoning."""
    items: list[JSON] = []
    for item in output:
        kind = item.get("type")
        if kind == "message":
            parts = [_part(p) for p in item.get("content") or ()]
            items.append({"type": "message", "role": "assistant", "content": parts})
        elif kind == "function_call":
            keys = ("call_id", "name", "arguments")
            items.append({"type": "function_call", **{k: item[k] for k in keys}})
        elif kind == "reasoning":
            items.append({"type": "reasoning", "summary": item.get("summary") or []})
    return items


def _part(part: JSON) -> JSON:
    if part.get("type") == "refusal":
        return {"type": "refusal", "refusal": part.get("refusal", "")}
    return {"type": "output_text", "text": part.get("text", "")}


def with_history(body: JSON, history: list[JSON]) -> JSON:
    """``body`` with ``history`` (the items of the conversation so far) before its input."""
    return {**body, "input": [*history, *input_items(body["input"])]}


def split_response(response: JSON) -> tuple[list[JSON], JSON, JSON]:
    """A Responses object's output items, usage and the rest of it (``details``)."""
    details = {k: v for k, v in response.items() if k not in OWN}
    return list(response.get("output") or []), dict(response.get("usage") or {}), details


def stored_object(
    response_id: str, created_at: float, model: str, output: list[JSON], usage: JSON, details: JSON
) -> JSON:
    """The Responses object of a stored response, as ``GET /v1/responses/{id}`` shows it."""
    return {"id": response_id, "object": "response", "created_at": int(created_at),
            **details, "model": model, "output": output, "usage": usage or None}  # fmt: skip


def listed_items(response_id: str, items: list[JSON]) -> list[JSON]:
    """Input items as ``input_items`` lists them: each with an id, messages with parts."""
    base = response_id.removeprefix("resp_")
    out = []
    for i, item in enumerate(items):
        shown = {"id": f"in_{base}_{i}", **item}
        if shown.get("type", "message") == "message":
            shown["type"] = "message"
            content = shown.get("content")
            if isinstance(content, str):
                kind = "output_text" if shown.get("role") == "assistant" else "input_text"
                shown["content"] = [{"type": kind, "text": content}]
            shown.setdefault("status", "completed")
        out.append(shown)
    return out
