"""The texts of a request the guardrail stage reads (``gateway.guardrails``), each with where
it sits, so that a redaction can be written back into the body sent upstream.

Every format reaches the request path in OpenAI chat shape: a message's ``content`` is a
string or a list of parts, of which only ``text`` (and ``refusal``) parts are read; images,
audio, files and unknown parts are skipped, never parsed. Anthropic ``tool_result`` blocks
arrive as ``tool`` messages (``providers.translate_reverse``), Responses
``function_call_output`` items too (``providers.translate_responses``).

A ``Unit`` is what one scan reads: the text parts of one message joined (the model reads them
as one text, so a value or a phrase split across two parts is still found; a hit is mapped
back onto the parts it covers), or the ``arguments`` of one tool call. The arguments of the
tool calls a client sends back (``tool_calls[].function.arguments``, Responses
``function_call`` items, Anthropic ``tool_use`` input) are tool traffic: part ``tool``. The
tools' definitions come from the SaaS, like its system prompt: part ``system``; a tool's
description is a unit, and so are the strings of each object of its parameters' schema
(``description``, ``title``, ``enum``, ``default``, ``examples``, ``const``, ``pattern``,
``format``, vendor keywords: every string the model reads), joined by a line break; the
schema's structure (property names, ``type``, ``$ref``, ``required``) is not read, so a
redaction never breaks it.

An embeddings request's ``input`` (``EmbedInput``): each string a unit of part ``user``;
token-id arrays are not read, only counted for the skipped note.

Work is bounded by the stage (``guardrails.max_scan_chars``): a unit is read in full or not
at all, and a unit not read is reported, never skipped silently.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

UNIT_COST = 64  # characters a unit counts for at least (the per-scan overhead)
ROLES = {"user": "user", "tool": "tool", "function": "tool", "system": "system",
         "developer": "system", "assistant": "assistant"}  # fmt: skip
TEXT_PARTS = ("text", "refusal", "input_text", "output_text")
# a JSON schema's keywords whose strings are its structure, not text: never read or rewritten
# (the value of a property *named* so is a schema, an object: read as any other)
SCHEMA_WORDS = frozenset({"type", "$ref", "$id", "$schema", "$anchor", "$dynamicRef",
                          "$dynamicAnchor", "required"})  # fmt: skip
# its keywords whose values are data: every string in them is read, however deep
DATA_WORDS = frozenset({"enum", "const", "default", "examples", "example"})
GAP = "\n"  # between two strings of one schema object, read as one text


@dataclass(slots=True)
class Slot:
    """One text of the body: ``holder[key]`` is the string (``holder``: a message, a part, a
    schema, or a list of strings: ``key`` its index). A ``where`` of ``""`` is a gap between
    two texts read as one (``GAP``): in no body, so writing it changes nothing."""

    where: str
    holder: Any  # dict[str, Any] | list[Any]
    key: str | int

    @property
    def text(self) -> str:
        holder, key = self.holder, self.key
        if isinstance(holder, dict):
            value = holder.get(key)
        else:
            value = holder[key] if isinstance(key, int) and 0 <= key < len(holder) else None
        return value if isinstance(value, str) else ""

    def write(self, text: str) -> None:
        if self.where:  # a gap is in no body
            self.holder[self.key] = text


GAP_SLOT = Slot("", {"": GAP}, "")  # never written


@dataclass(slots=True)
class Unit:
    """The slots one scan reads as one text: ``text`` is theirs joined (lone surrogates read
    as ``?``: same length), ``starts[i]`` where slot ``i`` starts in it."""

    where: str
    slots: list[Slot]
    starts: list[int] = field(default_factory=list)
    text: str = ""

    @classmethod
    def of(cls, where: str, slots: list[Slot]) -> Unit:
        texts = [slot.text for slot in slots]
        starts = list(itertools.accumulate(map(len, texts[:-1]), initial=0)) if texts else []
        joined = "".join(texts)
        return cls(where, slots, starts, joined if joined.isascii() else _valid(joined))

    @property
    def cost(self) -> int:
        return max(len(self.text), UNIT_COST)

    def edit(self, edits: list[tuple[int, int, str]]) -> None:
        """Apply ``edits`` (start, end, replacement; offsets in ``text``, the first of two
        overlapping ones wins): a span across slots puts its replacement in the first slot
        it covers and takes its pieces out of the others, so nothing of it stays."""
        per: list[list[tuple[int, int, str]]] = [[] for _ in self.slots]
        pos = 0
        for start, end, new in sorted(edits, key=lambda e: (e[0], -e[1])):
            if start < pos or end <= start or end > len(self.text):
                continue
            pos, first = end, True
            i = max(bisect.bisect_right(self.starts, start) - 1, 0)
            while i < len(self.slots) and self.starts[i] < end:
                at = self.starts[i]
                lo, hi = max(start, at), min(end, at + len(self.slots[i].text))
                if lo < hi:
                    per[i].append((lo - at, hi - at, new if first else ""))
                    first = False
                i += 1
        for slot, mine in zip(self.slots, per, strict=True):
            if mine:
                slot.write(_spliced(slot.text, mine))


def _spliced(text: str, edits: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, new in edits:
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def chat_units(body: dict[str, Any], wanted: frozenset[str]) -> list[Unit]:
    """The units of a chat body's messages whose part (``user``, ``tool``, ``system``,
    ``assistant``) is in ``wanted``: each message's text, and each of its tool calls'
    arguments (part ``tool``); and the tools' definitions (part ``system``: ``tool_units``)."""
    messages = body.get("messages")
    out: list[Unit] = []
    if "system" in wanted:
        out.extend(tool_units(body))
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        where = ROLES.get(str(message.get("role")))
        if where is not None and where in wanted:
            slots = list(_content_slots(message, "content", where))
            if slots:
                out.append(Unit.of(where, slots))
        if "tool" in wanted:
            out.extend(Unit.of("tool", [s]) for s in _call_slots(message))
    return out


def tool_units(body: dict[str, Any]) -> Iterator[Unit]:
    """The texts of a body's tool definitions, of part ``system`` (they come from the SaaS,
    like a system prompt, and the model reads them): a chat tool's ``function.description``
    (``custom.description``, legacy ``functions[].description``), a Responses tool's own
    ``description`` (native deployments), each a unit; and the strings of each object of a
    tool's ``parameters`` schema, a unit per object (``schema_slots``)."""
    tools, legacy = body.get("tools"), body.get("functions")
    for tool in [*(tools if isinstance(tools, list) else ()),
                 *(legacy if isinstance(legacy, list) else ())]:  # fmt: skip
        if not isinstance(tool, dict):
            continue
        inner = tool.get("function", tool.get("custom"))
        spec = inner if isinstance(inner, dict) else tool
        if isinstance(spec.get("description"), str):
            yield Unit.of("system", [Slot("system", spec, "description")])
        for slots in schema_slots(spec.get("parameters")):
            yield Unit.of("system", _gapped(slots))


def schema_slots(schema: Any) -> Iterator[list[Slot]]:
    """Per object (or list) of a JSON schema, the slots of its strings the model reads: every
    string value but those of ``SCHEMA_WORDS`` (its structure), with every string inside its
    ``DATA_WORDS`` values (``enum``, ``default``, ...); keys (property names) are never read.
    Walked without recursion (the body's depth is bounded already: it had to encode,
    ``api.body.read_json``)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        slots: list[Slot] = []
        children: list[Any] = []
        for key, value in _pairs(node):
            if isinstance(value, str):
                if key not in SCHEMA_WORDS:
                    slots.append(Slot("system", node, key))
            elif key in DATA_WORDS:
                slots.extend(_data_slots(value))
            elif isinstance(value, dict) or (isinstance(value, list) and key not in SCHEMA_WORDS):
                children.append(value)
        if slots:
            yield slots
        stack.extend(reversed(children))


def _data_slots(value: Any) -> list[Slot]:
    """The slots of every string inside ``value`` (a schema's data: ``enum``, ...), in order."""
    out: list[Slot] = []
    stack = [value]
    while stack:
        node = stack.pop()
        nested = []
        for key, item in _pairs(node):
            if isinstance(item, str):
                out.append(Slot("system", node, key))
            elif isinstance(item, dict | list):
                nested.append(item)
        stack.extend(reversed(nested))
    return out


def _pairs(node: Any) -> list[tuple[Any, Any]]:
    if isinstance(node, dict):
        return list(node.items())
    return list(enumerate(node)) if isinstance(node, list) else []


def _gapped(slots: list[Slot]) -> list[Slot]:
    """``slots`` with a ``GAP`` between each two (values apart, as the model reads them)."""
    out = [GAP_SLOT] * (2 * len(slots) - 1)
    out[::2] = slots
    return out


def chat_slots(body: dict[str, Any], wanted: frozenset[str]) -> list[Slot]:
    """The text slots of ``chat_units`` (the gaps aside)."""
    return [slot for unit in chat_units(body, wanted) for slot in unit.slots if slot.where]


def responses_units(body: dict[str, Any]) -> list[Unit]:
    """Every text of a Responses request (``instructions``, tool descriptions, ``input``:
    messages, function calls' arguments, function call outputs as a string or as parts):
    where the values the chat body had redacted are replaced too, for a native deployment."""
    out: list[Unit] = []
    if isinstance(body.get("instructions"), str):
        out.append(Unit.of("system", [Slot("system", body, "instructions")]))
    out.extend(tool_units(body))
    items = body.get("input")
    if isinstance(items, str):
        return [*out, Unit.of("user", [Slot("user", body, "input")])]
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("arguments"), str):  # function_call
            out.append(Unit.of("tool", [Slot("tool", item, "arguments")]))
        slots = [*_content_slots(item, "output", "tool"), *_content_slots(item, "content", "user")]
        if slots:
            out.append(Unit.of(slots[0].where, slots))
    return out


def responses_slots(body: dict[str, Any]) -> list[Slot]:
    """The text slots of ``responses_units`` (the gaps aside)."""
    return [slot for unit in responses_units(body) for slot in unit.slots if slot.where]


def _call_slots(message: dict[str, Any]) -> Iterator[Slot]:
    """The ``arguments`` of a message's tool calls (and of the legacy ``function_call``)."""
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            yield Slot("tool", function, "arguments")
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str):
        yield Slot("tool", legacy, "arguments")


def _content_slots(message: dict[str, Any], key: str, where: str) -> Iterator[Slot]:
    content = message.get(key)
    if isinstance(content, str):
        yield Slot(where, message, key)
        return
    if not isinstance(content, list):
        return
    for part in content:  # one level: parts do not nest in any format the path accepts
        if isinstance(part, dict) and part.get("type") in TEXT_PARTS:
            name = "refusal" if part.get("type") == "refusal" else "text"
            if isinstance(part.get(name), str):
                yield Slot(where, part, name)


def _valid(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def skipped_parts(body: dict[str, Any], most: int = 8) -> str:
    """The content parts of ``body``'s messages no check reads (images, audio, files,
    unknown types), counted by type (``image_url=2,input_audio=1``; at most ``most`` types):
    the note a screened answer carries in ``x-farebox-guardrails-skipped``."""
    counts: dict[str, int] = {}
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in TEXT_PARTS:
                name = kind if isinstance(kind, str) and kind.isidentifier() else "unknown"
                counts[name[:40]] = counts.get(name[:40], 0) + 1
    return ",".join(f"{k}={v}" for k, v in sorted(counts.items())[:most])


@dataclass(slots=True)
class EmbedInput:
    """An embeddings request's ``input`` as the stage reads it: each string (the input itself,
    or an item of a list) one text of part ``user``, held in a box of its own so that a
    redaction can be written back (``write``); token-id arrays cannot be read, and are
    counted for the note (``skipped``)."""

    body: dict[str, Any]
    boxes: list[dict[str, Any]]  # {"text": str} per string, in order
    positions: list[int]  # where each box's string sits in the list (-1: the input itself)
    skipped: str = ""

    @classmethod
    def of(cls, body: dict[str, Any]) -> EmbedInput:
        value = body.get("input")
        if isinstance(value, str):
            return cls(body, [{"text": value}], [-1])
        if value is None or value == []:  # nothing to read (an empty list is refused first)
            return cls(body, [], [])
        if not isinstance(value, list):
            return cls(body, [], [], "unknown=1")
        if all(_token_id(v) for v in value):  # one token array
            return cls(body, [], [], "tokens=1")
        boxes, positions, tokens, unknown = [], [], 0, 0
        for i, item in enumerate(value):
            if isinstance(item, str):
                boxes.append({"text": item})
                positions.append(i)
            elif isinstance(item, list) and item and all(_token_id(v) for v in item):
                tokens += 1
            else:
                unknown += 1
        counts = (("tokens", tokens), ("unknown", unknown))
        return cls(body, boxes, positions, ",".join(f"{k}={n}" for k, n in counts if n))

    def units(self) -> list[Unit]:
        """One unit per string (read afresh: after a redaction, its new text)."""
        return [Unit.of("user", [Slot("user", box, "text")]) for box in self.boxes]

    def write(self) -> None:
        """Put the boxes' strings (redacted) back into the body's ``input``."""
        if self.positions == [-1]:
            self.body["input"] = self.boxes[0]["text"]
            return
        items = list(self.body["input"])
        for box, i in zip(self.boxes, self.positions, strict=True):
            items[i] = box["text"]
        self.body["input"] = items


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
