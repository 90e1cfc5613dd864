"""The texts of a chat request the guardrail stage reads (``gateway.guardrails``), each with
where it sits, so that a redaction can be written back into the body sent upstream.

Every format reaches the request path in OpenAI chat shape: a message's ``content`` is a
string or a list of parts, of which only ``text`` (and ``refusal``) parts are read; images,
audio, files and unknown parts are skipped, never parsed. Anthropic ``tool_result`` blocks
arrive as ``tool`` messages (``providers.translate_reverse``), Responses
``function_call_output`` items too (``providers.translate_responses``).

Work is bounded: at most ``MAX_TEXTS`` texts and ``MAX_TOTAL_CHARS`` characters are read per
request; a text longer than ``MAX_TEXT_CHARS`` is read at its head and its tail (half each),
where instructions and pasted values usually sit, and its middle is not scanned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_TEXT_CHARS = 32_768  # read of one text: its head and tail, 16 KiB each
MAX_TOTAL_CHARS = 262_144  # read of one request, all texts together
MAX_TEXTS = 4_096  # texts read per request (messages times parts)
ROLES = {"user": "user", "tool": "tool", "function": "tool", "system": "system",
         "developer": "system", "assistant": "assistant"}  # fmt: skip
TEXT_PARTS = ("text", "refusal", "input_text", "output_text")


@dataclass(slots=True)
class Slot:
    """One text of the body: ``holder[key]`` is the string (a message or a part)."""

    where: str
    holder: dict[str, Any]
    key: str

    @property
    def text(self) -> str:
        value = self.holder.get(self.key)
        return value if isinstance(value, str) else ""

    def write(self, text: str) -> None:
        self.holder[self.key] = text


def chat_slots(body: dict[str, Any], wanted: frozenset[str]) -> list[Slot]:
    """The text slots of a chat body's messages whose part (``user``, ``tool``, ``system``,
    ``assistant``) is in ``wanted``."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    out: list[Slot] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        where = ROLES.get(str(message.get("role")))
        if where is None or where not in wanted:
            continue
        out.extend(_content_slots(message, "content", where))
        if len(out) >= MAX_TEXTS:
            return out[:MAX_TEXTS]
    return out


def responses_slots(body: dict[str, Any]) -> list[Slot]:
    """Every text slot of a Responses request (``instructions``, ``input``): where the
    values the chat body had redacted are replaced too, for a native deployment."""
    out: list[Slot] = []
    if isinstance(body.get("instructions"), str):
        out.append(Slot("system", body, "instructions"))
    items = body.get("input")
    if isinstance(items, str):
        return [*out, Slot("user", body, "input")]
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("output"), str):  # function_call_output
            out.append(Slot("tool", item, "output"))
        out.extend(_content_slots(item, "content", "user"))
        if len(out) >= MAX_TEXTS:
            return out[:MAX_TEXTS]
    return out


def _content_slots(message: dict[str, Any], key: str, where: str) -> Iterator[Slot]:
    content = message.get(key)
    if isinstance(content, str):
        yield Slot(where, message, key)
        return
    if not isinstance(content, list):
        return
    for part in content:  # one level: parts do not nest in any format the path accepts
        if isinstance(part, dict) and part.get("type") in TEXT_PARTS:
            field = "refusal" if part.get("type") == "refusal" else "text"
            if isinstance(part.get(field), str):
                yield Slot(where, part, field)


@dataclass(frozen=True, slots=True)
class Window:
    """What of one text is scanned: ``text`` (its head, or head and tail joined) and where
    the tail starts in it and in the original (offset mapping for redaction)."""

    text: str
    head_end: int  # index in ``text`` where the head ends (len(text) when whole)
    tail_at: int  # index in ``text`` where the tail starts (len(text) when whole)
    shift: int  # added to an index at or past ``tail_at`` to get the original's index


def window(text: str, budget: int) -> Window | None:
    """The part of ``text`` to scan within ``budget`` characters left for the request (None
    when nothing is left). Lone surrogates (invalid Unicode) become ``?``: same length."""
    cap = min(MAX_TEXT_CHARS, budget)
    if cap <= 0 or not text:
        return None
    text_ok = text if text.isascii() else _valid(text)
    if len(text_ok) <= cap:
        return Window(text_ok, len(text_ok), len(text_ok), 0)
    half = cap // 2
    head, tail = text_ok[:half], text_ok[len(text_ok) - half :]
    # a newline between the two halves: no phrase or value is read across the cut
    return Window(head + "\n" + tail, half, half + 1, len(text_ok) - half - (half + 1))


def _valid(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text
