"""The guardrails on an answer (``gateway.guardrails``): placeholders mapped back for the
caller (``pii.restore``) and the answer's own PII flagged or redacted (``output.pii``), in a
whole answer and across a stream's text deltas without breaking the stream's format.

Streams are rewritten at the text-delta level, before the client's format is written: an
OpenAI chat chunk's ``choices[].delta.content`` (which the Anthropic and Responses renderers
then turn into ``content_block_delta`` and ``response.output_text.delta``), or a native
Responses stream's ``response.output_text.delta``. Text held back (a placeholder or a value
cut between two deltas) goes out with the choice's finishing chunk, or in a chunk of its own
before the usage; it is rewritten before the stream's ledger entry is built
(``GuardedStream.before_entry``), so that its findings are in the entry.

Restore keeps a placeholder that sits inside a link (``guardrails.links``: a URL, a markdown
link or image target, an HTML ``href``/``src`` value, a URL-encoded context) unless the plan
says ``pii.restore_in_links: true``; each answer that tried gets one ``pii``/``restore_in_link``
finding (``flagged``, ``where`` ``output``). Tool calls' arguments are restored too (chat
``tool_calls[].function.arguments`` and the legacy ``function_call``, whole and as streamed
fragments, which the Anthropic and Responses renderers turn into ``tool_use`` input and
``function_call`` arguments; a native Responses answer's ``function_call`` items and
``function_call_arguments`` events), the values JSON-escaped, with the same link rule.

Order: restore, then the output scan (``placeholders.OutputRedactor`` / ``redact_output``),
so the answer's own PII never becomes a placeholder that restore would turn into one of the
caller's values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from farebox.core.guardrails import Finding, Hit
from farebox.guardrails import pii_patterns
from farebox.guardrails.placeholders import OutputRedactor, Redactor, StreamRestorer, redact_output

Scan = Callable[[str], list[Hit]]  # the answer's PII recogniser (blocking, fast)
HOLD = 64  # characters an output scan holds back, so a value cut between deltas is seen whole
MAX_DEPTH = 8  # how deep a native Responses event is walked for its texts
IN_LINK = "restore_in_link"  # the finding of a placeholder kept because it sits in a link
LEGACY = -1  # the key of a chat stream's legacy ``function_call`` among its tool calls


class _Choice:
    """One stream choice: its placeholders restored first, then its own PII scanned
    (``placeholders.OutputRedactor``: it holds back a tail cut at whitespace, never inside
    a value). ``reported`` counts the scanner's hits already turned into findings;
    ``calls`` restores its tool calls' arguments, by the call's index."""

    __slots__ = ("restore", "scan", "reported", "calls")

    def __init__(self, restore: StreamRestorer | None, scan: OutputRedactor | None) -> None:
        self.restore = restore
        self.scan = scan
        self.reported = 0
        self.calls: dict[int, StreamRestorer] = {}


class AnswerGuard:
    """One request's answer: ``text`` for a whole text, ``delta``/``flush`` per stream
    choice; ``findings`` what the answer's scan found (``where`` ``output``).

    The caller's placeholders are restored first (``restorer``: PII only, never a secret),
    then the answer's own PII is scanned, and with ``redact`` replaced by placeholders that
    number past the request's (``numbering``: the input's redactor) and are never restored.
    A value that is one of the caller's own restored values is not the answer's PII: it is
    neither redacted nor reported. With ``redact`` off (flag) the text is not held back.
    ``links`` (``pii.restore_in_links``): whether a placeholder inside a link is restored."""

    def __init__(
        self,
        restorer: Redactor | None,
        scan: Scan | None,
        redact: bool,
        numbering: Redactor | None = None,
        links: bool = False,
    ) -> None:
        self._restorer = restorer
        self._links = links
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

    def _kept(self, count: int) -> None:
        """``count`` placeholders were kept in links: one finding says the answer tried."""
        if count and IN_LINK not in self._seen:
            self._seen[IN_LINK] = Finding(pii_patterns.DETECTOR, IN_LINK, "flagged", 1.0, "output")

    def _restored(self, text: str, json: bool) -> str:
        assert self._restorer is not None
        out, kept = self._restorer.restored(text, links=self._links, json=json)
        self._kept(kept)
        return out

    def arguments(self, text: str) -> str:
        """A tool call's whole arguments (JSON) with the caller's values back, JSON-escaped
        (the answer's own PII in them is not scanned)."""
        return self._restored(text, True) if self._restorer is not None else text

    def text(self, text: str) -> str:
        if self._restorer is not None:
            text = self._restored(text, False)
        if self._scan is None:
            return text
        redacted, hits = redact_output(text, self._scan, self._redactor)
        for hit in hits:
            self._merge(self._seen, hit)
        return redacted if self._redact else text

    def _stream(self, index: int) -> _Choice:
        choice = self._streams.get(index)
        if choice is None:
            restore = self._streaming(False)
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

    def _streaming(self, json: bool) -> StreamRestorer | None:
        if self._restorer is None:
            return None
        return self._restorer.streaming(links=self._links, json=json)

    def _fed(self, restore: StreamRestorer, text: str, last: bool) -> str:
        """``text`` through a stream's restorer (``last``: and what it held back); the
        placeholders it kept in links become the finding."""
        before = restore.kept
        out = restore.feed(text) + (restore.flush() if last else "")
        self._kept(restore.kept - before)
        return out

    def delta(self, index: int, text: str) -> str:
        choice = self._stream(index)
        if choice.restore is not None:
            text = self._fed(choice.restore, text, False)
        return self._scanned(choice, text, False)

    def _text_rest(self, choice: _Choice) -> str:
        """What a choice's text holds back (its restore's, then its scan's)."""
        text = self._fed(choice.restore, "", True) if choice.restore is not None else ""
        return self._scanned(choice, text, True)

    def flush(self, index: int) -> str:
        """What a stream choice's text still holds back; its tool calls' rests stay for
        ``call_rests``."""
        choice = self._streams.get(index)
        if choice is None:
            return ""
        if not choice.calls:
            del self._streams[index]
        return self._text_rest(choice)

    def call_delta(self, index: int, call: int, fragment: str) -> str:
        """A fragment of tool call ``call``'s arguments in stream choice ``index``."""
        choice = self._stream(index)
        restore = choice.calls.get(call)
        if restore is None:
            made = self._streaming(True)
            if made is None:
                return fragment
            restore = choice.calls[call] = made
        return self._fed(restore, fragment, False)

    def call_rests(self, index: int, but: int | None = None) -> dict[int, str]:
        """What choice ``index``'s tool calls (all of them, or all ``but`` one, the call a
        delta is for: the others are done) hold back, by call; with ``but`` None, the choice
        is done."""
        choice = self._streams.get(index)
        if choice is None:
            return {}
        rests = {}
        for call, restore in choice.calls.items():
            if call != but and (rest := self._fed(restore, "", True)):
                rests[call] = rest
        if but is None:
            self._streams.pop(index, None)
        return rests

    def held(self) -> list[int]:
        """The stream choices that may still hold text."""
        return list(self._streams)

    # answers, in the shapes the path sees --------------------------------------------------
    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` with its choices' text and tool calls' arguments rewritten
        (a copy: the upstream's answer is what the cache keeps)."""
        choices = []
        for choice in body.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                choice = {**choice, "message": self._message(message)}
            choices.append(choice)
        return {**body, "choices": choices}

    def _message(self, message: dict[str, Any]) -> dict[str, Any]:
        out = dict(message)
        if isinstance(message.get("content"), str):
            out["content"] = self.text(message["content"])
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            out["tool_calls"] = [
                {**c, "function": self._function(c["function"])}
                if isinstance(c, dict) and isinstance(c.get("function"), dict)
                else c
                for c in calls
            ]
        if isinstance(message.get("function_call"), dict):
            out["function_call"] = self._function(message["function_call"])
        return out

    def _function(self, function: dict[str, Any]) -> dict[str, Any]:
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            return function
        return {**function, "arguments": self.arguments(arguments)}

    def native_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A native Responses object with its output texts and ``function_call`` items'
        arguments rewritten (a copy)."""
        out = dict(body)
        if isinstance(body.get("output"), list):
            out["output"] = self._rewritten(body["output"])
        return out

    def _rewritten(self, value: Any) -> Any:
        return _texts(value, self.text, self.arguments, 0)

    def chat_chunk(self, item: dict[str, Any]) -> dict[str, Any]:
        """A chat chunk with its text deltas and tool-call argument fragments rewritten; a
        choice's held text goes out when its tool calls start (before them), a call's held
        arguments when the next call starts, and all the rest with the finishing chunk."""
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
            if self._chunk_calls(index, delta) and index in self._streams:
                text = (text or "") + self._text_rest(self._streams[index])
            if choice.get("finish_reason") is not None:
                text = (text or "") + self.flush(index)
                _add_rests(delta, self.call_rests(index))
            if text is not None:
                delta["content"] = text
        return item

    def _chunk_calls(self, index: int, delta: dict[str, Any]) -> bool:
        """Rewrite a chunk's tool-call argument fragments (and the legacy
        ``function_call``'s) in place; whether it has any tool call."""
        calls, legacy = delta.get("tool_calls"), delta.get("function_call")
        has = (isinstance(calls, list) and bool(calls)) or isinstance(legacy, dict)
        if not has or self._restorer is None:
            return has
        if isinstance(calls, list):
            out: list[Any] = []
            for call in calls:
                if not isinstance(call, dict):
                    out.append(call)
                    continue
                at = call.get("index", 0)
                at = at if isinstance(at, int) else 0
                out.extend(_rest_calls(self.call_rests(index, but=at)))  # the calls before
                function = call.get("function")
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    fragment = self.call_delta(index, at, function["arguments"])
                    call = {**call, "function": {**function, "arguments": fragment}}
                out.append(call)
            delta["tool_calls"] = out
        if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str):
            fragment = self.call_delta(index, LEGACY, legacy["arguments"])
            delta["function_call"] = {**legacy, "arguments": fragment}
        return has

    def held_chunk(self, identity: dict[str, Any]) -> dict[str, Any] | None:
        """A chunk carrying what is still held back (the upstream ended without finishing
        its choices), or None."""
        choices = []
        for index in self.held():
            delta: dict[str, Any] = {}
            if text := self.flush(index):
                delta["content"] = text
            _add_rests(delta, self.call_rests(index))
            if delta:
                choices.append({"index": index, "delta": delta, "finish_reason": None})
        return {**identity, "choices": choices} if choices else None

    def native_events(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """A native Responses event: text and argument deltas streamed through, the whole
        texts and arguments of the ``*.done`` events and the final response rewritten at
        once; before a ``*.done`` event, a delta with what its stream held back."""
        kind = item.get("type")
        index = item.get("output_index", 0)
        index = index if isinstance(index, int) else 0
        if kind == "response.output_text.delta" and isinstance(item.get("delta"), str):
            item["delta"] = self.delta(index, item["delta"])
            return [item]
        calls = kind == "response.function_call_arguments.delta"
        if calls and isinstance(item.get("delta"), str) and self._restorer is not None:
            item["delta"] = self.call_delta(index, 0, item["delta"])
            return [item]
        keys: tuple[str, ...] = ("item_id", "output_index")
        if kind == "response.output_text.done":
            rest, keys = self.flush(index), (*keys, "content_index")
            kind = "response.output_text.delta"
        elif kind == "response.function_call_arguments.done":
            rest = "".join(self.call_rests(index).values())
            kind = "response.function_call_arguments.delta"
        else:
            return [self._rewritten(item)]
        done = self._rewritten(item)
        if not rest:
            return [done]
        held: dict[str, Any] = {k: item[k] for k in keys if k in item}
        return [{"type": kind, **held, "delta": rest}, done]


def _rest_calls(rests: dict[int, str]) -> list[dict[str, Any]]:
    """Chunk ``tool_calls`` entries carrying what calls held back (the legacy one aside)."""
    return [{"index": k, "function": {"arguments": v}} for k, v in rests.items() if k != LEGACY]


def _add_rests(delta: dict[str, Any], rests: dict[int, str]) -> None:
    """Add what a choice's tool calls held back to its finishing ``delta``."""
    if LEGACY in rests:
        legacy = delta.get("function_call")
        legacy = legacy if isinstance(legacy, dict) else {}
        arguments = (legacy.get("arguments") or "") + rests[LEGACY]
        delta["function_call"] = {**legacy, "arguments": arguments}
    if more := _rest_calls(rests):
        calls = delta.get("tool_calls")
        delta["tool_calls"] = [*(calls if isinstance(calls, list) else ()), *more]


def _texts(
    value: Any, rewrite: Callable[[str], str], arguments: Callable[[str], str], depth: int
) -> Any:
    """``value`` with the strings under its ``text`` keys rewritten, and those under its
    ``arguments`` keys (a ``function_call``'s JSON) restored (bounded depth)."""
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [_texts(v, rewrite, arguments, depth + 1) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(v, str) and k in ("text", "arguments"):
                out[k] = rewrite(v) if k == "text" else arguments(v)
            else:
                out[k] = _texts(v, rewrite, arguments, depth + 1)
        return out
    return value


class GuardedStream:
    """A stream renderer (``gateway.render.StreamRenderer``) whose items' texts go through an
    ``AnswerGuard`` first: chat chunks, or a native deployment's Responses events."""

    def __init__(self, out: Any, answer: AnswerGuard, native: bool) -> None:
        self._out = out
        self._answer = answer
        self._native = native
        self._identity: dict[str, Any] = {"object": "chat.completion.chunk"}
        self._held = b""  # a chat stream's held text, written before its entry was built
        self._final: dict[str, Any] | None = None  # a native stream's final event, rewritten

    def chunk(self, item: dict[str, Any]) -> bytes:
        if self._native:
            return b"".join(self._out.chunk(e) for e in self._answer.native_events(item))
        self._identity = {k: item[k] for k in ("id", "object", "created", "model") if k in item}
        return bytes(self._out.chunk(self._answer.chat_chunk(item)))

    def before_entry(self, chunk: Any | None) -> None:
        """Called before the stream's ledger entry is built: what the answer still holds back
        is rewritten now (a chat stream's held text and tool-call rests, a native stream's
        final ``response.completed`` ``chunk``), so that its findings are in the entry;
        ``usage`` sends it."""
        if self._native:
            if chunk is not None:
                self._final = self._answer.native_events(dict(chunk))[-1]
            return
        held = self._answer.held_chunk(self._identity)
        if held is not None:
            self._held += self._out.chunk(held)

    def usage(self, chunk: Any, entry: Any) -> bytes:
        if self._native:
            final, self._final = self._final, None
            if final is None:
                final = self._answer.native_events(dict(chunk))[-1]
            return bytes(self._out.usage(final, entry))
        self.before_entry(None)
        held, self._held = self._held, b""
        return bytes(held + self._out.usage(chunk, entry))

    def done(self) -> bytes:
        return bytes(self._out.done())

    def error(self, error: Any) -> bytes:
        return bytes(self._out.error(error))
