"""The guardrails on an answer (``gateway.guardrails``): placeholders mapped back for the
caller (``pii.restore``) and the answer's own PII flagged or redacted (``output.pii``), in a
whole answer and across a stream's text deltas without breaking the stream's format.

Streams are rewritten at the text-delta level, before the client's format is written: an
OpenAI chat chunk's ``choices[].delta.content`` (which the Anthropic and Responses renderers
then turn into ``content_block_delta`` and ``response.output_text.delta``), or a native
Responses stream's ``response.output_text.delta``. Text held back (a placeholder or a value
cut between two deltas) goes out with the choice's finishing chunk, or in a chunk of its own
before the usage; its findings are in ``findings`` before it goes out (the ledger entry is
written first).

Order: restore, then the output scan (``placeholders.OutputRedactor`` / ``redact_output``),
so the answer's own PII never becomes a placeholder that restore would turn into one of the
caller's values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farebox.core.guardrails import Finding, Hit
from farebox.guardrails.placeholders import OutputRedactor, Redactor, StreamRestorer, redact_output

Scan = Callable[[str], list[Hit]]  # the answer's PII recogniser (blocking, fast)
HOLD = 64  # characters an output scan holds back, so a value cut between deltas is seen whole
MAX_DEPTH = 8  # how deep a native Responses event is walked for its texts


class _Choice:
    """One stream choice: its placeholders restored first, then its own PII scanned
    (``placeholders.OutputRedactor``: it holds back a tail cut at whitespace, never inside
    a value). ``reported`` counts the scanner's hits already turned into findings."""

    __slots__ = ("restore", "scan", "reported")

    def __init__(self, restore: StreamRestorer | None, scan: OutputRedactor | None) -> None:
        self.restore = restore
        self.scan = scan
        self.reported = 0


class AnswerGuard:
    """One request's answer: ``text`` for a whole text, ``delta``/``flush`` per stream
    choice; ``findings`` what the answer's scan found (``where`` ``output``).

    The caller's placeholders are restored first (``restorer``: PII only, never a secret),
    then the answer's own PII is scanned, and with ``redact`` replaced by placeholders that
    number past the request's (``numbering``: the input's redactor) and are never restored.
    A value that is one of the caller's own restored values is not the answer's PII: it is
    neither redacted nor reported. With ``redact`` off (flag) the text is not held back."""

    def __init__(
        self,
        restorer: Redactor | None,
        scan: Scan | None,
        redact: bool,
        numbering: Redactor | None = None,
    ) -> None:
        self._restorer = restorer
        self._scan = self._without_own(scan, restorer) if scan is not None else None
        self._redact = redact
        first = numbering if numbering is not None else restorer
        self._redactor = first.following() if first is not None else Redactor()
        self._streams: dict[int, _Choice] = {}
        self._seen: dict[str, Finding] = {}
        self.action = "redacted" if redact else "flagged"

    @staticmethod
    def _without_own(scan: Scan, restorer: Redactor | None) -> Scan:
        own = frozenset(restorer.values.values()) if restorer is not None else frozenset()
        if not own:
            return scan

        def answers_own(text: str) -> list[Hit]:
            return [h for h in scan(text) if text[h.start : h.end] not in own]

        return answers_own

    @property
    def findings(self) -> list[Finding]:
        """What the answer's scan found, with what a stream still holds back (so that an
        entry written before the held text goes out has its findings)."""
        seen = dict(self._seen)
        for choice in self._streams.values():
            for hit in choice.scan.pending() if choice.scan is not None else ():
                self._merge(seen, hit)
        return list(seen.values())

    def _merge(self, seen: dict[str, Finding], hit: Hit) -> None:
        known = seen.get(hit.category)
        if known is None or known.score < hit.score:
            seen[hit.category] = Finding(hit.detector, hit.category, self.action,  # type: ignore[arg-type]
                                         hit.score, "output")  # fmt: skip

    def text(self, text: str) -> str:
        if self._restorer is not None:
            text = self._restorer.restore(text)
        if self._scan is None:
            return text
        redacted, hits = redact_output(text, self._scan, self._redactor)
        for hit in hits:
            self._merge(self._seen, hit)
        return redacted if self._redact else text

    def _stream(self, index: int) -> _Choice:
        choice = self._streams.get(index)
        if choice is None:
            restore = self._restorer.streaming() if self._restorer is not None else None
            scan = OutputRedactor(self._scan, self._redactor, hold=HOLD) if self._scan else None
            choice = self._streams[index] = _Choice(restore, scan)
        return choice

    def _scanned(self, choice: _Choice, text: str, last: bool) -> str:
        """``text`` (restored) through the choice's output scan: what can go now."""
        if choice.scan is None:
            return text
        out = choice.scan.feed(text)
        if last:
            out += choice.scan.flush()
        for hit in choice.scan.hits[choice.reported :]:
            self._merge(self._seen, hit)
        choice.reported = len(choice.scan.hits)
        return out if self._redact else text

    def delta(self, index: int, text: str) -> str:
        choice = self._stream(index)
        if choice.restore is not None:
            text = choice.restore.feed(text)
        return self._scanned(choice, text, False)

    def flush(self, index: int) -> str:
        choice = self._streams.pop(index, None)
        if choice is None:
            return ""
        text = choice.restore.flush() if choice.restore is not None else ""
        return self._scanned(choice, text, True)

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
