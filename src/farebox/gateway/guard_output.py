"""The guardrails on an answer (``gateway.guardrails``): placeholders mapped back for the
caller (``pii.restore``) and the answer's own PII flagged or redacted (``output.pii``), in a
whole answer and across a stream's text deltas without breaking the stream's format.

Streams are rewritten at the text-delta level, before the client's format is written: an
OpenAI chat chunk's ``choices[].delta.content`` (which the Anthropic and Responses renderers
then turn into ``content_block_delta`` and ``response.output_text.delta``), or a native
Responses stream's ``response.output_text.delta``. Text held back (a placeholder or a value
cut between two deltas) goes out with the choice's finishing chunk, or in a chunk of its own
before the usage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farebox.core.guardrails import Finding, Hit
from farebox.guardrails.placeholders import Redactor, StreamRestorer

Scan = Callable[[str], list[Hit]]  # the answer's PII recogniser (blocking, fast)
HOLD = 64  # characters an output scan holds back, so a value cut between deltas is seen whole
MAX_DEPTH = 8  # how deep a native Responses event is walked for its texts


class OutputScan:
    """Scans an answer's text as it streams (a minimal ``OutputRedactor``: the stage's own):
    ``feed`` returns what can go now, holding back the last ``HOLD`` characters, or from the
    start of a value that runs into them; ``flush`` the rest. ``redact``: hits become
    placeholders (``<EMAIL_1>``, of a redactor of its own, never mapped back)."""

    def __init__(self, scan: Scan, redact: bool, found: Callable[[Hit], None]) -> None:
        self._scan = scan
        self._redact = redact
        self._found = found
        self._held = ""
        self._redactor = Redactor()

    def feed(self, delta: str) -> str:
        text = self._held + delta
        if len(text) <= HOLD:
            self._held = text
            return ""
        hits = self._scan(text)
        cut = len(text) - HOLD
        for hit in hits:
            if hit.start < cut < hit.end:
                cut = min(cut, hit.start)
        self._held = text[cut:]
        return self._out(text[:cut], [h for h in hits if h.end <= cut])

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._out(text, self._scan(text)) if text else ""

    def whole(self, text: str) -> str:
        return self._out(text, self._scan(text))

    def _out(self, text: str, hits: list[Hit]) -> str:
        for hit in hits:
            self._found(hit)
        return self._redactor.redact(text, hits) if self._redact and hits else text


class AnswerGuard:
    """One request's answer: ``text`` for a whole text, ``delta``/``flush`` per stream
    choice; ``findings`` what the answer's scan found (``where`` ``output``)."""

    def __init__(self, restorer: Redactor | None, scan: Scan | None, redact: bool) -> None:
        self._restorer = restorer
        self._scan = scan
        self._redact = redact
        self._streams: dict[int, tuple[OutputScan | None, StreamRestorer | None]] = {}
        self._seen: dict[str, Finding] = {}
        self.action = "redacted" if redact else "flagged"

    @property
    def findings(self) -> list[Finding]:
        return list(self._seen.values())

    def _found(self, hit: Hit) -> None:
        known = self._seen.get(hit.category)
        if known is None or known.score < hit.score:
            self._seen[hit.category] = Finding(hit.detector, hit.category, self.action,  # type: ignore[arg-type]
                                               hit.score, "output")  # fmt: skip

    def text(self, text: str) -> str:
        if self._scan is not None:
            text = OutputScan(self._scan, self._redact, self._found).whole(text)
        return self._restorer.restore(text) if self._restorer is not None else text

    def _stream(self, index: int) -> tuple[OutputScan | None, StreamRestorer | None]:
        pair = self._streams.get(index)
        if pair is None:
            scan = OutputScan(self._scan, self._redact, self._found) if self._scan else None
            restore = self._restorer.streaming() if self._restorer is not None else None
            pair = self._streams[index] = (scan, restore)
        return pair

    def delta(self, index: int, text: str) -> str:
        scan, restore = self._stream(index)
        if scan is not None:
            text = scan.feed(text)
        return restore.feed(text) if restore is not None else text

    def flush(self, index: int) -> str:
        scan, restore = self._streams.pop(index, (None, None))
        text = scan.flush() if scan is not None else ""
        if restore is not None:
            text = restore.feed(text) + restore.flush()
        return text

    def held(self) -> list[int]:
        """The stream choices that may still hold text."""
        return list(self._streams)

    # answers, in the shapes the path sees --------------------------------------------------
    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` with its choices' text rewritten (a copy: the upstream's
        answer is what the cache keeps)."""
        choices = []
        for choice in body.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                choice = {
                    **choice,
                    "message": {**message, "content": self.text(message["content"])},
                }
            choices.append(choice)
        return {**body, "choices": choices}

    def native_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A native Responses object with its output texts rewritten (a copy)."""
        out = dict(body)
        if isinstance(body.get("output"), list):
            out["output"] = _texts(body["output"], self.text, 0)
        return out

    def chat_chunk(self, item: dict[str, Any]) -> dict[str, Any]:
        """A chat chunk with its text deltas rewritten; a finishing choice gets what its
        stream held back."""
        for choice in item.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            text = self.delta(index, content) if isinstance(content, str) else None
            if choice.get("finish_reason") is not None:
                text = (text or "") + self.flush(index)
            if text is not None:
                delta["content"] = text
        return item

    def held_chunk(self, identity: dict[str, Any]) -> dict[str, Any] | None:
        """A chunk carrying what is still held back (the upstream ended without finishing
        its choices), or None."""
        choices = []
        for index in self.held():
            if text := self.flush(index):
                choices.append({"index": index, "delta": {"content": text}, "finish_reason": None})
        return {**identity, "choices": choices} if choices else None

    def native_events(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """A native Responses event: text deltas streamed through, the whole texts of the
        ``*.done`` events and the final response rewritten at once; before a text's
        ``output_text.done``, a delta with what its stream held back."""
        kind = item.get("type")
        index = item.get("output_index", 0)
        index = index if isinstance(index, int) else 0
        if kind == "response.output_text.delta" and isinstance(item.get("delta"), str):
            item["delta"] = self.delta(index, item["delta"])
            return [item]
        if kind != "response.output_text.done":
            return [_texts(item, self.text, 0)]
        rest = self.flush(index)
        done = _texts(item, self.text, 0)
        if not rest:
            return [done]
        keys = ("item_id", "output_index", "content_index")
        held: dict[str, Any] = {k: item[k] for k in keys if k in item}
        return [{"type": "response.output_text.delta", **held, "delta": rest}, done]


def _texts(value: Any, rewrite: Callable[[str], str], depth: int) -> Any:
    """``value`` with the strings under its ``text`` keys rewritten (bounded depth)."""
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [_texts(v, rewrite, depth + 1) for v in value]
    if isinstance(value, dict):
        return {
            k: rewrite(v) if k == "text" and isinstance(v, str) else _texts(v, rewrite, depth + 1)
            for k, v in value.items()
        }
    return value


class GuardedStream:
    """A stream renderer (``gateway.render.StreamRenderer``) whose items' texts go through an
    ``AnswerGuard`` first: chat chunks, or a native deployment's Responses events."""

    def __init__(self, out: Any, answer: AnswerGuard, native: bool) -> None:
        self._out = out
        self._answer = answer
        self._native = native
        self._identity: dict[str, Any] = {"object": "chat.completion.chunk"}

    def chunk(self, item: dict[str, Any]) -> bytes:
        if self._native:
            return b"".join(self._out.chunk(e) for e in self._answer.native_events(item))
        self._identity = {k: item[k] for k in ("id", "object", "created", "model") if k in item}
        return bytes(self._out.chunk(self._answer.chat_chunk(item)))

    def usage(self, chunk: Any, entry: Any) -> bytes:
        if self._native:
            return bytes(self._out.usage(self._answer.native_events(dict(chunk))[-1], entry))
        held = self._answer.held_chunk(self._identity)
        first = self._out.chunk(held) if held is not None else b""
        return bytes(first + self._out.usage(chunk, entry))

    def done(self) -> bytes:
        return bytes(self._out.done())

    def error(self, error: Any) -> bytes:
        return bytes(self._out.error(error))
