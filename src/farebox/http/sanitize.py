"""What of an upstream's error a tenant may see: its type, its code, and a scrubbed message.

An upstream's error text can echo the gateway's own credentials (in any shape, not only
``sk-...``), its internal URLs, host names and addresses. :func:`scrub` removes anything that
looks like one of those; :func:`identifier` keeps a ``type`` or ``code`` only when it is a
plain identifier. Both are pure functions.
"""

from __future__ import annotations

import re

MAX_MESSAGE_CHARS = 500
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]*")
_CREDENTIAL = re.compile(
    r"(?i)\b(?:bearer|basic|token|api[-_ ]?key)\b[\s:=]+\S+"
    r"|(?:sk|rk|pk)-[A-Za-z0-9_\-]{4,}|org-[A-Za-z0-9]{4,}|proj_[A-Za-z0-9]{4,}"
    r"|fb[xsa]_[A-Za-z0-9_\-]{8,}|AIza[A-Za-z0-9_\-]{8,}"
)
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_\-+/=]{16,}")
_SEGMENTS = re.compile(r"[-_/+=]")
# Host names end in a public or internal top-level name; a dotted JSON path such as
# ``tools[0].function.name`` must survive: ``.name``, ``.type`` and the like don't count.
TOP_LEVEL_NAMES = tuple(
    """com net org edu gov io ai dev app cloud co sh me tv cc ly to gg xyz info biz tech site
    online us uk de fr eu nl se ch jp cn in ru br ca au internal local lan corp home intra
    private svc cluster example test invalid localdomain amazonaws azure goog""".split()
)
_TLD = "(?:" + "|".join(TOP_LEVEL_NAMES) + ")"
_ADDRESSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(?:[0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}|[0-9A-Fa-f:]*::[0-9A-Fa-f:]*"),
        "[address]",
    ),  # fmt: skip
    (re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?::[0-9]+)?"), "[address]"),
    (re.compile(r"(?i)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\." + _TLD + r"(?::[0-9]+)?"), "[host]"),
    (
        re.compile(r"(?i)\blocalhost\b|[A-Za-z0-9\-]*[A-Za-z][A-Za-z0-9\-]*:[0-9]{2,5}\b"),
        "[host]",
    ),  # fmt: skip
)
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")


def looks_secret(run: str) -> bool:
    """A run of key characters that looks like a credential rather than a word or a model
    name: 32 or more characters; or 16 or more mixing upper case, lower case and digits; or
    one unbroken segment of 16 or more with letters and digits."""
    if len(run) >= 32:
        return True
    if any(c.isupper() for c in run) and any(c.islower() for c in run) and _digit(run):
        return True
    return any(
        len(part) >= 16 and _digit(part) and not part.isdigit() for part in _SEGMENTS.split(run)
    )


def _digit(text: str) -> bool:
    return any("0" <= c <= "9" for c in text)


def _key(match: re.Match[str]) -> str:
    return "[redacted]" if looks_secret(match.group()) else match.group()


def scrub(text: str) -> str:
    """``text`` without URLs, credentials, IP addresses or host names; at most 500 chars."""
    text = _URL.sub("[url]", text)
    text = _CREDENTIAL.sub("[redacted]", text)
    text = _TOKEN_RUN.sub(_key, text)
    for pattern, mark in _ADDRESSES:
        text = pattern.sub(mark, text)
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def identifier(value: object) -> str | None:
    """An upstream error ``type`` or ``code`` when it is a plain identifier, else ``None``."""
    if isinstance(value, str) and _IDENTIFIER.fullmatch(value) and scrub(value) == value:
        return value
    return None
