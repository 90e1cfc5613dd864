"""Offline token estimates. An estimate only sizes reservations and limits; billing uses
provider-reported usage, except for streams cut short before the provider reported it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4


def estimate_text(text: str) -> int:
    """About one token per four characters, at least one for non-empty text."""
    if not text:
        return 0
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def _content_text(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    yield text
                elif part.get("type") in ("image_url", "image", "input_audio"):
                    yield "x" * 340  # ~85 tokens, OpenAI's low-detail image cost


def estimate_messages(messages: Any) -> int:
    """Estimate the prompt tokens of an OpenAI or Anthropic ``messages`` list."""
    if not isinstance(messages, list):
        return 0
    total = 3
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += MESSAGE_OVERHEAD
        total += sum(estimate_text(t) for t in _content_text(message.get("content")))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            total += estimate_text(str(calls))
    return total


def estimate_input(value: Any) -> int:
    """Estimate embeddings input: a string, a list of strings, or token arrays."""
    if isinstance(value, str):
        return estimate_text(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(estimate_input(v) for v in value)
    return 0
