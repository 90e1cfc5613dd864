"""Whether an answer, read so far, ends inside a markdown ``<...>`` destination
(``AngleState``): the part of ``links.in_link``'s decision that reads past its window.

Such a destination (``[a](<https://evil.example/?q= ... <EMAIL_1>>)``, ``[r]: <...>``) can
hold spaces, so a placeholder far into it, past the window, would look like plain prose. So
one small state is carried over the whole answer, character by character: the non-streamed
restore reads the answer once, in order, and a stream feeds each part it sends, so both see
exactly the same state at every placeholder, whatever the deltas (the state of a text is a
function of the text alone). The cost is linear: outside a destination only ``]`` is looked
at (one ``find``), inside it only ``\\``, ``<``, ``>`` and line endings.

The state opens at a ``<`` that is the first character after ``](`` / ``]:`` (spaces and
tabs, and a line ending, allowed between, as ``links`` reads an opener) and closes at the
next unescaped ``>`` that does not end a placeholder (``<EMAIL_1>``; one that starts the
destination, ``](<EMAIL_1>``, closes it) or at a blank line (line endings alone do not: the
safe side). ``json`` reads a tool call's arguments: the JSON strings' escapes are decoded
first (``\\u003c`` is a ``<``), and each string starts afresh.
"""

from __future__ import annotations

import re

_WS = " \t\f\v"
_HEX = frozenset("0123456789abcdefABCDEF")
_JSON_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_INSIDE = re.compile(r"[\\<>\r\n]")  # what an open destination reacts to
_JSON_PLAIN = re.compile(r'["\\\]=]')  # what a JSON string outside a destination reacts to
_PLAIN_STOPS = re.compile(r"[\]=]")  # what plain text outside a destination reacts to
_VALUE_STOPS = {q: re.compile(rf"[{q}\r\n]") for q in "\"'`"}  # and inside a quoted value


class AngleState:
    """Feed an answer's text in order (``feed``); ``open`` tells whether it ends inside a
    markdown ``<...>`` destination."""

    __slots__ = ("open", "_json", "_phase", "_nl", "_blank", "_cr", "_esc", "_cand",
                 "_digits", "_first", "_js", "_hex", "_eq", "_quote", "_quote_at", "_fed",
                 "_at")  # fmt: skip

    def __init__(self, json: bool = False) -> None:
        self.open = False
        self._json = json
        self._js = 0  # json: 0 outside a string, 1 in one, 2 after a backslash, 3 in \\uXXXX
        self._hex = ""
        self._fed = 0  # characters fed so far
        self._at = 0  # where the character in hand is
        self._reset()

    def inside(self, window: int) -> bool:
        """Whether the text fed ends inside an ``<...>`` destination, or inside a quoted
        value (``="...``, ``='...``) opened more than ``window`` characters back (one
        opened closer is the window's to read: ``links`` tells a URL attribute's)."""
        return self.open or (self._quote != "" and self._fed - self._quote_at > window)

    def _reset(self) -> None:
        self.open = False
        self._phase = 0  # 0 nothing, 1 after ``]`` (and spaces), 2 after ``](`` or ``]:``
        self._nl = False  # phase 1: a line ending seen since the ``]``
        self._blank = False  # the line so far is empty or spaces and tabs, after a line ending
        self._cr = False  # the last character was a ``\r`` (a ``\n`` after it is the same end)
        self._esc = False  # open: the next character is escaped
        self._cand = 0  # open: 1 right after a ``<``, 2 in a placeholder's name
        self._digits = -1  # its name ends ``_`` and this many digits (-1: it does not)
        self._first = False  # the ``<`` in hand opened the destination
        self._eq = False  # after a ``=`` (and spaces): a quote opens a value
        self._quote = ""  # the quote of the value open, if any
        self._quote_at = 0

    def fed(self, text: str) -> AngleState:
        self.feed(text)
        return self

    def feed(self, text: str) -> None:
        if self._json:
            self._feed_json(text)
            return
        i, n, base = 0, len(text), self._fed
        self._fed += n
        while i < n:
            if not (self.open or self._quote or self._phase or self._eq):
                m = _PLAIN_STOPS.search(text, i)
                if m is None:
                    return
                i = m.start()
            elif not (self._esc or self._cand or self._phase or self._eq):
                stops = _INSIDE if self.open else _VALUE_STOPS[self._quote]
                m = stops.search(text, i)
                j = n if m is None else m.start()
                if j > i:  # what the skipped characters change: the line is no longer blank
                    self._cr = False
                    self._blank = self._blank and not text[i:j].strip(" \t")
                    i = j
                    continue
            self._at = base + i
            self._char(text[i])
            i += 1

    def _feed_json(self, text: str) -> None:
        i, n, base = 0, len(text), self._fed
        self._fed += n
        while i < n:
            if self._js == 0:
                i = text.find('"', i)
                if i < 0:
                    return
            elif self._js == 1 and not (self.open or self._phase or self._eq or self._quote):
                m = _JSON_PLAIN.search(text, i)
                if m is None:
                    return
                i = m.start()
            self._at = base + i
            self._json_char(text[i])
            i += 1

    def _json_char(self, c: str) -> None:
        js = self._js
        if js == 0:
            if c == '"':
                self._js = 1
                self._reset()
        elif js == 1:
            if c == '"':
                self._js = 0
                self._reset()
            elif c == "\\":
                self._js = 2
            else:
                self._char(c)
        elif js == 2:
            if c == "u":
                self._js, self._hex = 3, ""
            else:
                self._js = 1
                self._char(_JSON_SIMPLE.get(c, c))
        elif c not in _HEX:  # not an escape after all: its characters as they are
            self._js = 1
            for raw in "\\u" + self._hex:
                self._char(raw)
            self._json_char(c)
        else:
            self._hex += c
            if len(self._hex) == 4:
                self._js = 1
                self._char(chr(int(self._hex, 16)))

    def _char(self, c: str) -> None:
        if c == "\n" and self._cr:
            self._cr = False
            return  # the second half of a ``\r\n``
        ending = c in "\r\n"
        blank = ending and self._blank
        self._cr = c == "\r"
        if ending:
            self._blank = True
        elif c not in " \t":
            self._blank = False
        if self.open:
            self._inside(c, blank)
        elif self._quote:
            if c == self._quote or blank:
                self._quote = ""
        elif self._eq and c in "\"'`":
            self._eq, self._quote, self._quote_at = False, c, self._at
        else:
            self._eq = c == "=" or (self._eq and (c in _WS or ending))
            if self._phase:
                self._lead(c, ending, blank)
            elif c == "]":
                self._phase, self._nl = 1, False

    def _lead(self, c: str, ending: bool, blank: bool) -> None:
        """Between a ``]`` and the destination's first character."""
        if c == "]":
            self._phase, self._nl = 1, False
        elif blank:
            self._phase = 0
        elif self._phase == 1:
            if c in "(:":
                self._phase = 2
            elif ending and not self._nl:
                self._nl = True
            elif c not in _WS:
                self._phase = 0
        elif c == "<":
            self.open, self._phase, self._esc = True, 0, False
            self._cand, self._digits, self._first = 1, -1, True
        elif not (ending or c in _WS):
            self._phase = 0

    def _inside(self, c: str, blank: bool) -> None:
        """In an open destination."""
        if blank:
            self._reset()
            return
        if self._esc:
            self._esc, self._cand = False, 0
            return
        if self._cand and self._name(c):
            return
        if c == "\\":
            self._esc = True
        elif c == "<":
            self._cand, self._digits, self._first = 1, -1, False
        elif c == ">":
            self._reset()

    def _name(self, c: str) -> bool:
        """A placeholder's name, ``<[A-Z][A-Z0-9_]*_\\d{1,12}>``: whether ``c`` goes on with
        it (its ``>`` closes the destination only if its ``<`` opened it)."""
        if self._cand == 1:
            if "A" <= c <= "Z":
                self._cand = 2
                return True
        elif c == "_":
            self._digits = 0
            return True
        elif c.isdecimal():
            self._digits = self._digits + 1 if 0 <= self._digits < 12 else -1
            return True
        elif "A" <= c <= "Z":
            self._digits = -1
            return True
        elif c == ">" and self._digits > 0:
            if self._first:
                self._reset()
            self._cand = 0
            return True
        self._cand = 0
        return False
