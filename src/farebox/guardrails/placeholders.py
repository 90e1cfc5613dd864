"""Typed placeholders: ``Redactor.redact`` replaces spans with ``<EMAIL_1>``-style
placeholders (the same value gets the same placeholder within a request), ``restore`` maps
them back in an answer, ``StreamRestorer`` does it across a stream's deltas (a placeholder cut
between two deltas is held back until it is whole). (stub: the interface the stage calls)"""

from __future__ import annotations

from collections.abc import Sequence

from farebox.core.guardrails import Hit

PREFIXES = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CARD"}


class Redactor:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}  # placeholder -> original value
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def redact(self, text: str, hits: Sequence[Hit]) -> str:
        """``text`` with each hit's span replaced by its placeholder (overlaps: the first)."""
        out, pos = [], 0
        for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
            if hit.start < pos or hit.end <= hit.start:
                continue
            out.append(text[pos : hit.start])
            out.append(self._placeholder(hit.category, text[hit.start : hit.end]))
            pos = hit.end
        out.append(text[pos:])
        return "".join(out)

    def _placeholder(self, category: str, value: str) -> str:
        key = (category, value)
        if key not in self._by_value:
            prefix = PREFIXES.get(category, category)
            n = self._counts[prefix] = self._counts.get(prefix, 0) + 1
            self._by_value[key] = f"<{prefix}_{n}>"
            self.values[self._by_value[key]] = value
        return self._by_value[key]

    def restore(self, text: str) -> str:
        for placeholder, value in self.values.items():
            text = text.replace(placeholder, value)
        return text

    def streaming(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """Restores placeholders across deltas: ``feed`` returns what can be sent now, ``flush``
    the rest at the stream's end."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:]:
            self._held, text = text[cut:], text[:cut]
        else:
            self._held = ""
        return self._redactor.restore(text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._redactor.restore(held)
