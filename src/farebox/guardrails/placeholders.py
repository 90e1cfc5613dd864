"""Typed placeholders: ``Redactor.redact`` replaces spans with ``<EMAIL_1>``-style
placeholders (the same value gets the same placeholder within a request), ``restore`` maps
them back in an answer, ``StreamRestorer`` does it across a stream's deltas (a placeholder cut
between two deltas is held back until it is whole, or until it provably is not one).

``OutputRedactor`` redacts PII in a streamed answer without cutting an entity in half (it
holds back a bounded tail), ``redact_output`` does it for a whole answer.

A placeholder that the client itself wrote (a literal ``<EMAIL_1>`` in its text) is never
reused: ``reserve`` (called by ``redact`` on its text, and by the stage on all of a request's
texts first) numbers past it, so restoring never turns the client's literal into a value.

Secrets are never restored: ``pii_only`` is what an answer's restore uses, and it maps back
only PII placeholders (a ``<SECRET_1>`` the model writes stays a placeholder, so an injected
instruction cannot make the answer carry a secret, in a link for example). ``following``
numbers an answer's own redactions past the request's, so an output placeholder never names
an input value.

A placeholder inside a link (``links.in_link``: a URL, a markdown link or image target or
reference definition, an autolink, an HTML ``href``/``src`` value, a URL-encoded context) is
kept as it is when ``links`` is off (``restored``, ``StreamRestorer``): a value restored into a
link that a chat UI renders would go to that link's host. ``json`` restores into a tool
call's arguments: the value is written JSON-escaped, as a JSON string's content.
"""

from __future__ import annotations

import json as jsonlib
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from farebox.core.guardrails import Hit
from farebox.guardrails.link_state import AngleState
from farebox.guardrails.links import WINDOW, in_link

PREFIXES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
    "IP_ADDRESS": "IP",
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    "URL": "URL",
}
# every hit of the ``secrets`` detector gets this prefix, whatever its kind
SECRET_PREFIX = "SECRET"  # noqa: S105 (a placeholder's prefix, not a password)
_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d{1,12})>")
_RESERVE_BELOW = 10**10  # larger literals: our counters never get there
_NOT_PREFIX = re.compile(r"[^A-Z0-9_]")

ScanFn = Callable[[str], Sequence[Hit]]


def prefix_of(hit: Hit) -> str:
    if hit.detector == "secrets":
        return SECRET_PREFIX
    known = PREFIXES.get(hit.category)
    if known:
        return known
    cleaned = _NOT_PREFIX.sub("_", hit.category.upper()).strip("_")
    return cleaned if cleaned[:1].isalpha() else f"PII_{cleaned}"


class Redactor:
    """One request's placeholders (build one per request)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}  # placeholder -> original value
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def reserve(self, *texts: str) -> None:
        """Number past the placeholder-shaped literals already in ``texts``."""
        for text in texts:
            if "<" not in text:
                continue
            for m in _PLACEHOLDER.finditer(text):
                if m.group(0) in self.values:
                    continue  # ours, already (a text redacted earlier)
                prefix, n = m.group(1), int(m.group(2))
                if n < _RESERVE_BELOW:
                    self._counts[prefix] = max(self._counts.get(prefix, 0), n)

    def redact(self, text: str, hits: Sequence[Hit]) -> str:
        """``text`` with each hit's span replaced by its placeholder (overlaps: the first)."""
        self.reserve(text)
        out, pos = [], 0
        for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
            if hit.start < pos or hit.end <= hit.start or hit.end > len(text):
                continue
            out.append(text[pos : hit.start])
            out.append(self._placeholder(prefix_of(hit), text[hit.start : hit.end]))
            pos = hit.end
        out.append(text[pos:])
        return "".join(out)

    def _placeholder(self, prefix: str, value: str) -> str:
        key = (prefix, value)
        if key not in self._by_value:
            n = self._counts[prefix] = self._counts.get(prefix, 0) + 1
            self._by_value[key] = f"<{prefix}_{n}>"
            self.values[self._by_value[key]] = value
        return self._by_value[key]

    def restore(self, text: str, links: bool = True) -> str:
        """One pass: each known placeholder becomes its value (a value that looks like a
        placeholder is not expanded again); unknown ones stay as they are; with ``links``
        off, so do the known ones inside a link."""
        return self.restored(text, links=links)[0]

    def restored(
        self,
        text: str,
        *,
        links: bool = True,
        json: bool = False,
        before: str = "",
        angle: AngleState | None = None,
    ) -> tuple[str, int]:
        """``text`` restored, and how many known placeholders were kept because they sit in
        a link (``links`` off). ``before``: the text that came before ``text`` (a stream's),
        read as the left context of its first placeholders; ``angle``: the link state of all
        the text before ``text`` (a stream's), which this call carries on over ``text``;
        ``json``: ``text`` is JSON (a tool call's arguments), each value is written
        JSON-escaped."""
        if not self.values or "<" not in text:
            if angle is not None:
                angle.feed(text)
            return text, 0
        if not links and angle is None:
            angle = AngleState(json).fed(before)
        values, out, pos, kept, read = self.values, [], 0, 0, 0
        for m in _PLACEHOLDER.finditer(text):
            value = values.get(m.group(0))
            if value is None:
                continue
            if angle is not None:
                angle.feed(text[read : m.start()])
                read = m.start()
                if not links and in_link(_left(before, text, read), json, angle.inside(WINDOW)):
                    kept += 1
                    continue
            out.append(text[pos : m.start()])
            out.append(jsonlib.dumps(value, ensure_ascii=False)[1:-1] if json else value)
            pos = m.end()
        out.append(text[pos:])
        if angle is not None:
            angle.feed(text[read:])
        return "".join(out), kept

    def streaming(self, *, links: bool = True, json: bool = False) -> StreamRestorer:
        return StreamRestorer(self, links=links, json=json)

    def pii_only(self) -> Redactor:
        """A copy that knows only the PII placeholders (what an answer's restore uses: a
        secret's placeholder is never mapped back)."""
        out = Redactor()
        secret = f"<{SECRET_PREFIX}_"
        out.values = {p: v for p, v in self.values.items() if not p.startswith(secret)}
        out._by_value = {k: p for k, p in self._by_value.items() if p in out.values}
        out._counts = dict(self._counts)
        return out

    def following(self) -> Redactor:
        """A new redactor (no values) numbering past this one's placeholders and reserved
        literals: an answer's own redactions, which are never restored."""
        out = Redactor()
        out._counts = dict(self._counts)
        return out


def _left(before: str, text: str, at: int) -> str:
    """The ``WINDOW`` characters before ``text[at]``, ``before`` first."""
    if at >= WINDOW:
        return text[at - WINDOW : at]
    return before[max(0, len(before) - (WINDOW - at)) :] + text[:at]


class StreamRestorer:
    """Restores placeholders across deltas: ``feed`` returns what can be sent now, ``flush``
    the rest at the stream's end. What is held back is a proper prefix of a known
    placeholder, so at most the longest placeholder's length less one: the link decision
    (``links`` off) reads only text before a placeholder, of which it keeps the last
    ``links.WINDOW`` characters sent (as the model wrote them) and the small link state of
    all of it (``link_state.AngleState``), and so never holds more back.
    ``kept`` counts the placeholders kept because they sit in a link."""

    def __init__(self, redactor: Redactor, links: bool = True, json: bool = False) -> None:
        self._redactor = redactor
        self._links = links
        self._json = json
        self._held = ""
        self._before = ""  # the tail of what was sent, unrestored: the left context
        self._angle = None if links else AngleState(json)  # and the state of all of it
        self.kept = 0

    def feed(self, delta: str) -> str:
        if not self._redactor.values:
            return delta
        text = self._held + delta
        cut = self._cut(text)
        self._held = text[cut:]
        return self._out(text[:cut])

    def _out(self, part: str) -> str:
        if not part:
            return part
        out, kept = self._redactor.restored(
            part, links=self._links, json=self._json, before=self._before, angle=self._angle
        )
        self.kept += kept
        if not self._links:
            self._before = (self._before + part)[-WINDOW:]
        return out

    def _cut(self, text: str) -> int:
        """The earliest position whose tail may still grow into a known placeholder."""
        longest = max(len(p) for p in self._redactor.values)
        i = text.find("<", max(0, len(text) - longest + 1))
        while i != -1:
            tail = text[i:]
            if any(len(p) > len(tail) and p.startswith(tail) for p in self._redactor.values):
                return i
            i = text.find("<", i + 1)
        return len(text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._out(held)


class OutputRedactor:
    """Redacts the PII that ``scan_fn`` finds in a streamed answer. ``feed`` returns the text
    that is safe to send: it holds back at least ``hold`` characters (more than the longest
    entity with spaces in it: 64 covers cards, IBANs and phones; an entity without spaces is
    never cut at a space, only past ``max_hold``), scans once per ``step`` new characters,
    and cuts at whitespace (or, past ``max_hold``, anywhere) but never inside a hit. ``hits``
    lists what it redacted (for the findings: categories and scores, never the text)."""

    def __init__(
        self,
        scan_fn: ScanFn,
        redactor: Redactor | None = None,
        hold: int = 64,
        max_hold: int = 2048,
        step: int = 32,
    ) -> None:
        self._scan = scan_fn
        self._redactor = redactor if redactor is not None else Redactor()
        self._hold = hold
        self._step = max(1, step)
        self._max_hold = max(max_hold, hold * 2)
        self._buf = ""
        self._ctx = ""  # the tail of what was sent: left context for the next scans
        self.hits: list[Hit] = []

    def feed(self, delta: str) -> str:
        self._buf += delta
        if len(self._buf) < self._hold + self._step:
            return ""  # scan once per ``step`` new characters, not once per token
        hits = self._hits()
        cut = self._cut(hits)
        if cut <= 0:
            return ""
        return self._emit(cut, [h for h in hits if h.end <= cut])

    def _hits(self) -> list[Hit]:
        """The hits in the held text, scanned with up to ``hold`` characters of what was sent
        before it as left context (so that a recogniser sees what the whole text shows)."""
        ctx = len(self._ctx)
        out = []
        for h in self._scan(self._ctx + self._buf):
            if h.end > ctx:
                out.append(replace(h, start=max(0, h.start - ctx), end=h.end - ctx))
        return sorted(out, key=lambda h: h.start)

    def _cut(self, hits: Sequence[Hit]) -> int:
        limit = len(self._buf) - self._hold
        cut = max(self._buf.rfind(ws, 0, limit + 1) for ws in (" ", "\n", "\t", "\r"))
        if cut <= 0 and len(self._buf) > self._max_hold:
            cut = limit
        for hit in hits:
            if hit.start < cut < hit.end:
                cut = hit.end if hit.end <= limit else hit.start
        return cut

    def _emit(self, cut: int, hits: list[Hit]) -> str:
        part, self._buf = self._buf[:cut], self._buf[cut:]
        self._ctx = (self._ctx + part)[-self._hold :]
        self.hits.extend(hits)
        return self._redactor.redact(part, hits)

    def flush(self) -> str:
        if not self._buf:
            return ""
        return self._emit(len(self._buf), self._hits())

    def pending(self) -> list[Hit]:
        """The hits in the text still held back (not yet sent, nothing changed)."""
        return self._hits() if self._buf else []

    @property
    def categories(self) -> list[str]:
        return [h.category for h in self.hits]


def redact_output(
    text: str, scan_fn: ScanFn, redactor: Redactor | None = None
) -> tuple[str, list[Hit]]:
    """A whole answer with the PII ``scan_fn`` finds replaced by placeholders, and the hits."""
    hits = list(scan_fn(text))
    return (redactor if redactor is not None else Redactor()).redact(text, hits), hits
