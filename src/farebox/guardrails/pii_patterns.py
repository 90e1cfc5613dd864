"""The built-in PII recognisers (no extra): precompiled regexes, then a check per entity.

Scores: 1.0 where the entity has a checksum that passed (``CREDIT_CARD``: Luhn and an issuer
prefix; ``IBAN_CODE``: mod 97 and the country's length); lower where only the shape and the
rules say so (``US_SSN`` 0.85, ``EMAIL_ADDRESS`` 0.9, ``IP_ADDRESS`` 0.8, ``PHONE_NUMBER``
0.7, national 0.6, ``URL`` 0.6). Phone numbers need separators or a leading ``+`` (an
order number such as ``#4815162342`` is not a phone). Overlapping hits keep the higher
score, then the longer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterator

from farebox.core.guardrails import Hit

DETECTOR = "pii"
ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
    "URL",
)

_EMAIL = re.compile(
    r"(?<![\w.+%!#$&'*/=?^`{|}~-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# +CC then 2..5 groups; or a US number (NXX) NXX-XXXX with an optional leading 1
_PHONE_INTL = re.compile(
    r"(?<![\w+#/.-])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,5}(?![\w/]|[.-]\d)"
)
_PHONE_US = re.compile(
    r"(?<![\w+#/.-])(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}([ .-]))[2-9]\d{2}[ .-]\d{4}"
    r"(?![\w/]|[.-]\d)"
)
# a national number with a trunk 0 and separators (UK "020 7946 0958", "0161 496 0000")
_PHONE_NATIONAL = re.compile(r"(?<![\w+#/.-])0\d{2,4}[ -]\d{3,4}[ -]\d{3,4}(?![\w/]|[.-]\d)")
_CARD_RUN = re.compile(r"(?<![\w.+-])\d+(?:[ -]\d+)*(?![\w]|[.-]\d)")
_DIGITS = re.compile(r"\d+")
# a run of digit groups that goes on a code: right after a token with digits ("AB12 4111...")
# or after the head of an IBAN-shaped code ("IT07 TOGR 4287 ...")
_CODE_BEFORE = re.compile(r"(?:[A-Za-z0-9]*\d[A-Za-z0-9]*|\b[A-Z]{2}\d{2}(?: [A-Z0-9]{1,4})*)[ -]$")
# issuer prefixes and their lengths: Visa, Mastercard (51-55, 2221-2720), Amex, Diners,
# Discover, JCB, UnionPay
_CARD_BRANDS = (
    (re.compile(r"4"), (13, 16, 19)),
    (re.compile(r"5[1-5]|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720"), (16,)),
    (re.compile(r"3[47]"), (15,)),
    (re.compile(r"30[0-5]|3[689]"), (14, 15, 16)),
    (re.compile(r"6011|64[4-9]|65"), (16, 17, 18, 19)),
    (re.compile(r"35(?:2[89]|[3-8]\d)"), (16, 17, 18, 19)),
    (re.compile(r"62"), (16, 17, 18, 19)),
)
_IBAN = re.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![\w-])")
_SSN = re.compile(r"(?<![\w.-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w]|[.-]\d)")
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w]|\.\d)"
)
_VERSION_BEFORE = re.compile(r"(?i)\b(?:version|release|build|ver\.?)\s*$")  # "version 1.2.3.4"
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{3,39}(?![\w:])")
_URL = re.compile(r"\bhttps?://[^\s<>\"'`]{3,2048}")
_URL_TRAIL = ".,;:!?)]}"
# ISO 13616 lengths of the countries most seen; others: any 15..34 that passes mod 97
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "UA": 29,
}  # fmt: skip
_BAD_SSNS = frozenset({"078051120", "219099999", "123456789"})

Finder = Callable[[str], Iterator[Hit]]


def card_brand_ok(digits: str) -> bool:
    """An issuer's prefix with one of its lengths."""
    return any(p.match(digits) and len(digits) in lengths for p, lengths in _CARD_BRANDS)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 7064 mod 97-10 over an IBAN without spaces."""
    if len(iban) < 15 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    moved = iban[4:] + iban[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in moved))
    except ValueError:
        return False
    return number % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _BAD_SSNS


def _emails(text: str) -> Iterator[Hit]:
    if "@" in text:
        for m in _EMAIL.finditer(text):
            yield Hit(DETECTOR, "EMAIL_ADDRESS", 0.9, m.start(), m.end())


def _phones(text: str) -> Iterator[Hit]:
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            n = sum(c.isdigit() for c in m.group())
            if 8 <= n <= 15 and (" " in m.group() or "-" in m.group() or n >= 10):
                yield Hit(DETECTOR, "PHONE_NUMBER", 0.7, m.start(), m.end())
    for m in _PHONE_US.finditer(text):
        yield Hit(DETECTOR, "PHONE_NUMBER", 0.7, m.start(), m.end())
    for m in _PHONE_NATIONAL.finditer(text):
        if _CODE_BEFORE.search(text, max(0, m.start() - 40), m.start()):
            continue  # the tail of a longer code (an IBAN's groups)
        if 10 <= sum(c.isdigit() for c in m.group()) <= 11:
            yield Hit(DETECTOR, "PHONE_NUMBER", 0.6, m.start(), m.end())


def _cards(text: str) -> Iterator[Hit]:
    """Within each run of digit groups, the longest card at group boundaries (13..19 digits,
    one kind of separator, an issuer prefix, Luhn), left to right."""
    for run in _CARD_RUN.finditer(text):
        groups = [(m.start(), m.end()) for m in _DIGITS.finditer(run.group())]
        goes_on = bool(_CODE_BEFORE.search(text, max(0, run.start() - 40), run.start()))
        yield from _cards_in_run(text, groups, run.start(), goes_on)


def _cards_in_run(
    text: str, groups: list[tuple[int, int]], base: int, goes_on: bool = False
) -> Iterator[Hit]:
    """A card starts the run or is set apart in it (one group, or groups joined by another
    separator than the one around them): the rest of a longer run of groups, such as a
    tracking number, is not a card."""
    i, last = 0, len(groups)
    while i < last:
        found = 0
        for j in range(min(last, i + 19), i, -1):
            start, end = base + groups[i][0], base + groups[j - 1][1]
            piece = text[start:end]
            if " " in piece and "-" in piece:
                continue
            if j - i > 1 and any(not 3 <= b - a <= 6 for a, b in groups[i:j]):
                continue  # grouped digits: groups of 3 to 6 ("4111 1111 ...", "3782 822463")
            if (i or goes_on) and not _set_apart(text, piece, start, end):
                continue
            digits = piece.replace(" ", "").replace("-", "")
            if card_brand_ok(digits) and luhn_ok(digits):
                yield Hit(DETECTOR, "CREDIT_CARD", 1.0, start, end)
                found = j
                break
        i = found if found else i + 1


def _set_apart(text: str, piece: str, start: int, end: int) -> bool:
    inner = "-" if "-" in piece else " " if " " in piece else ""
    return not inner or inner not in (text[start - 1 : start], text[end : end + 1])


def _ibans(text: str) -> Iterator[Hit]:
    """The regex is greedy (it may run into the next words): the search goes on right after
    the valid prefix, or one character after a match with none, so that one candidate never
    hides the next."""
    pos = 0
    while True:
        m = _IBAN.search(text, pos)
        if m is None:
            return
        span = _iban_prefix(m.group())
        if span:
            yield Hit(DETECTOR, "IBAN_CODE", 1.0, m.start(), m.start() + span)
            pos = m.start() + span
        else:
            pos = m.start() + 1


def _iban_prefix(raw: str) -> int:
    """The length of ``raw``'s prefix that is a valid IBAN (0: none), cut at a character."""
    ends = [i + 1 for i, c in enumerate(raw) if c != " "]  # end offset after k alnum chars
    compact = raw.replace(" ", "")
    want = _IBAN_LENGTHS.get(compact[:2])
    lengths = [want] if want else range(min(34, len(compact)), 14, -1)
    for n in lengths:
        if n <= len(compact) and iban_ok(compact[:n]):
            return ends[n - 1]
    return 0


def _ssns(text: str) -> Iterator[Hit]:
    for m in _SSN.finditer(text):
        if ssn_ok(m.group(1), m.group(3), m.group(4)):
            yield Hit(DETECTOR, "US_SSN", 0.85, m.start(), m.end())


def _ips(text: str) -> Iterator[Hit]:
    if "." in text:
        for m in _IPV4.finditer(text):
            if not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
                yield Hit(DETECTOR, "IP_ADDRESS", 0.8, m.start(), m.end())
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            try:
                ipaddress.IPv6Address(m.group())
            except ValueError:
                continue
            yield Hit(DETECTOR, "IP_ADDRESS", 0.8, m.start(), m.end())


def _urls(text: str) -> Iterator[Hit]:
    if "://" in text:
        for m in _URL.finditer(text):
            end = m.end()
            while end > m.start() and text[end - 1] in _URL_TRAIL:
                end -= 1
            yield Hit(DETECTOR, "URL", 0.6, m.start(), end)


def _finders() -> dict[str, Finder]:
    return {
        "EMAIL_ADDRESS": _emails,
        "PHONE_NUMBER": _phones,
        "CREDIT_CARD": _cards,
        "IBAN_CODE": _ibans,
        "US_SSN": _ssns,
        "IP_ADDRESS": _ips,
        "URL": _urls,
    }


def resolve(hits: list[Hit]) -> list[Hit]:
    """Overlapping hits: the higher score wins, then the longer; sorted by start."""
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (h.start, h.start - h.end)):
        if hit.end <= hit.start:
            continue
        if kept and hit.start < kept[-1].end:
            last = kept[-1]
            if ((hit.score, hit.end - hit.start)) > ((last.score, last.end - last.start)):
                kept[-1] = hit
            continue
        kept.append(hit)
    return kept


def scan(text: str, entities: Collection[str]) -> list[Hit]:
    """The PII spans of ``entities`` types in ``text`` (category: the entity type). Types
    this engine does not know (``PERSON``...) are ignored: presidio's engine has them."""
    hits: list[Hit] = []
    for entity, finder in _finders().items():
        if entity in entities:
            hits.extend(finder(text))
    return resolve(hits)
