"""Secrets in prompts: API keys of the major providers and clouds, private keys, JWTs and
passwords in connection strings. No extra.

Each kind is one precompiled regex behind a cheap prefilter (a few literal substrings that
every match must contain): a text with none of them costs one ``in`` per trigger. Spans are
exact: the secret itself (for ``AccountKey=...``, ``password=...`` and ``user:pw@host`` only
the value), never the words around it. Overlapping hits keep the longest.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from farebox.core.guardrails import Hit
from farebox.guardrails.spans import by_length, sweep

DETECTOR = "secrets"

# a key body: letters and digits, at least one of each (a slug such as
# "sk-my-very-long-branch-name" is not a key)
_OPENAI = re.compile(
    r"(?<![\w-])sk-(?!ant-)(?:proj-|svcacct-|admin-)?(?=[\w-]*\d)(?=[\w-]*[A-Za-z])"
    r"[A-Za-z0-9_-]{20,}(?![\w-])"
)
_ANTHROPIC = re.compile(r"(?<![\w-])sk-ant-(?:[a-z]+\d\d-)?(?=[\w-]*\d)[A-Za-z0-9_-]{20,}")
_AWS_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?![A-Za-z0-9])")
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_NEAR = 300  # chars between a key id (or "aws"/"secret") and its secret access key
_GCP_KEY = re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])")
_GCP_SA = re.compile(
    r'"private_key"\s*:\s*"(-----BEGIN (?:RSA )?PRIVATE KEY-----[^"]{20,}?'
    r'-----END (?:RSA )?PRIVATE KEY-----(?:\\n)?)"'
)
_AZURE = re.compile(r"(?:AccountKey|SharedAccessKey)=([A-Za-z0-9+/]{40,}={0,2})")
_GITHUB = re.compile(
    r"(?<![\w])(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})"
    r"(?![\w])"
)
_SLACK = re.compile(r"(?<![\w-])xox[baprs]-(?=[\w-]*\d)[A-Za-z0-9-]{10,}")
_STRIPE = re.compile(r"(?<![\w])(?:sk|rk)_live_[A-Za-z0-9]{16,}(?![\w])")
# a private key: its header, then the first footer at most 16,384 characters on, else a body
# of at least 16 base64 characters (a key cut short). Headers and footers are found once
# each (``_pem_spans``): the single regex's lazy ``[\s\S]{0,16384}?`` rescanned up to 16K
# characters for every header, quadratic on a text of headers.
_PEM_HEAD = re.compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_FOOT = re.compile(r"(?=(-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----))")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=\s\\]{16,16384}")
_PEM_GAP = 16384
_JWT = re.compile(
    r"(?<![\w.-])(eyJ[A-Za-z0-9_-]{8,})\.([A-Za-z0-9_-]{4,})\.([A-Za-z0-9_-]*)(?![\w.-])"
)
_CONN = re.compile(
    r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@?#]{1,128}:([^\s@/?#]{1,256})@[\w.-]+",
)
_ASSIGN = re.compile(
    r"(?i)\b(?:password|passwd|pwd|pass|secret|client_secret|api[_-]?key|apikey"
    r"|access[_-]?token|auth[_-]?token|private[_-]?token|token)"
    r"""["']?\s*[:=]\s*["']?([^\s"',;&]{8,256})"""
)
_NOT_A_PASSWORD = re.compile(r"^(?:[*xX.•_-]+|[$<{%].*|.*[}>]|password|changeme|secret)$")
_MIN_ENTROPY = 3.0  # bits per character of a generic assigned value
_PREFILTER_ASSIGN = ("pass", "pwd", "secret", "key", "token")


@dataclass(frozen=True, slots=True)
class _Kind:
    category: str
    triggers: tuple[str, ...]  # a match contains one of these (case-sensitive)
    find: Callable[[str], Iterator[tuple[int, int]]]


def _spans(pattern: re.Pattern[str], group: int = 0) -> Callable[[str], Iterator[tuple[int, int]]]:
    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in pattern.finditer(text):
            yield m.span(group)

    return find


def _pem_spans(text: str) -> Iterator[tuple[int, int]]:
    """What ``HEAD(?:[\\s\\S]{0,16384}?FOOT|BODY)`` finds left to right, in linear time."""
    feet = [(m.start(), m.end(1)) for m in _PEM_FOOT.finditer(text)] if "-----END" in text else []
    starts = [f[0] for f in feet]
    pos = 0
    while (head := _PEM_HEAD.search(text, pos)) is not None:
        k = bisect.bisect_left(starts, head.end())
        if k < len(feet) and feet[k][0] - head.end() <= _PEM_GAP:
            end = feet[k][1]
        elif (body := _PEM_BODY.match(text, head.end())) is not None:
            end = body.end()
        else:
            pos = head.start() + 1
            continue
        yield head.start(), end
        pos = end


def _jwt_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _JWT.finditer(text):
        if _jwt_header_ok(m.group(1)):
            yield m.span()


def _jwt_header_ok(part: str) -> bool:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        header = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


def _entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _mixed(value: str) -> bool:
    """Two of: lower case, upper case, digits, symbols."""
    kinds = (
        any(c.islower() for c in value),
        any(c.isupper() for c in value),
        any(c.isdigit() for c in value),
        any(not c.isalnum() for c in value),
    )
    return sum(kinds) >= 2


def _conn_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _CONN.finditer(text):
        if not _NOT_A_PASSWORD.match(m.group(1)):
            yield m.span(1)


def _assign_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _ASSIGN.finditer(text):
        value = m.group(1)
        if _NOT_A_PASSWORD.match(value) or not _mixed(value):
            continue
        if _entropy(value) >= _MIN_ENTROPY:
            yield m.span(1)


def _aws_secret_spans(text: str) -> Iterator[tuple[int, int]]:
    """A 40-character secret access key near a key id or the words "aws"/"secret"."""
    anchors = [m.start() for m in _AWS_ID.finditer(text)]
    lowered = text.lower()
    for word in ("aws", "secret"):
        start = lowered.find(word)
        while start != -1:
            anchors.append(start)
            start = lowered.find(word, start + 1)
    if not anchors:
        return
    anchors.sort()  # the nearest anchor by bisection: O(log anchors) per candidate
    for m in _AWS_SECRET.finditer(text):
        value = m.group(0)
        if not (_mixed(value) and any(c.isdigit() for c in value)):
            continue
        if _entropy(value) < 4.0:
            continue
        k = bisect.bisect_left(anchors, m.start() - _AWS_NEAR)
        if k < len(anchors) and anchors[k] <= m.start() + _AWS_NEAR:
            yield m.span()


def _kinds() -> tuple[_Kind, ...]:
    return (
        _Kind("private_key", ("PRIVATE KEY",), _pem_spans),
        _Kind("gcp_service_account_key", ('"private_key"',), _spans(_GCP_SA, 1)),
        _Kind("anthropic_api_key", ("sk-ant-",), _spans(_ANTHROPIC)),
        _Kind("openai_api_key", ("sk-",), _spans(_OPENAI)),
        _Kind("aws_access_key", ("AKIA", "ASIA", "ABIA", "ACCA"), _spans(_AWS_ID)),
        _Kind(
            "aws_secret_key", ("AKIA", "ASIA", "aws", "AWS", "ecret", "ECRET"), _aws_secret_spans
        ),
        _Kind("gcp_api_key", ("AIza",), _spans(_GCP_KEY)),
        _Kind("azure_storage_key", ("AccountKey=", "SharedAccessKey="), _spans(_AZURE, 1)),
        _Kind(
            "github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), _spans(_GITHUB)
        ),
        _Kind("slack_token", ("xox",), _spans(_SLACK)),
        _Kind("stripe_key", ("_live_",), _spans(_STRIPE)),
        _Kind("jwt", ("eyJ",), _jwt_spans),
        _Kind("connection_string_password", ("://",), _conn_spans),
    )


class SecretScanner:
    """The compiled kinds; ``scan`` is the module function's body."""

    def __init__(self, kinds: tuple[_Kind, ...] | None = None) -> None:
        self.kinds = _KINDS if kinds is None else kinds

    def scan(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        for kind in self.kinds:
            if any(t in text for t in kind.triggers):
                hits.extend(Hit(DETECTOR, kind.category, 1.0, s, e) for s, e in kind.find(text))
        lowered = text.lower()
        if "=" in text or ":" in text:
            if any(t in lowered for t in _PREFILTER_ASSIGN):
                hits.extend(
                    Hit(DETECTOR, "generic_secret", 0.8, s, e) for s, e in _assign_spans(text)
                )
        return _longest(hits)


def _longest(hits: list[Hit]) -> list[Hit]:
    """Overlapping hits (a sweep by start): the longer wins, then the higher score."""
    return sweep(hits, by_length)


# the kinds, made once (frozen records of compiled patterns: nothing in them changes); the
# request path's scan builds nothing per call
_KINDS = _kinds()
_SCANNER = SecretScanner(_KINDS)


def scan(text: str) -> list[Hit]:
    """The secrets in ``text``, with their spans (category: the secret's kind)."""
    return _SCANNER.scan(text)
