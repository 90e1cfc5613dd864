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

from farebox.core.guardrails import BUILTIN_PII, Hit
from farebox.guardrails.spans import by_score, sweep

DETECTOR = "pii"
_ALNUM_UPPER = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ENTITIES = BUILTIN_PII  # the types these recognisers read (``core.guardrails``)

_EMAIL = re.compile(
    r"(?<![\w.+%!#$&'*/=?^`{|}~-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# +CC then 1..5 groups: the regex ``\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,5}``
# then ``_INTL_TAIL``, after ``_INTL_START``'s look-behind. As one regex it backtracks
# through every split of a digit run into groups (thousands of steps per "+" before a long
# run): ``_intl_end`` finds the same match by arithmetic on the digit runs.
_INTL_START = re.compile(r"(?<![\w+#/.-])\+(\d{1,29})")
_INTL_PAREN = re.compile(r"[ .-]?\((\d{1,4})\)")
_INTL_RUN = re.compile(r"\d{1,26}")  # 26 digits already need 6 groups
_INTL_TAIL = re.compile(r"(?![\w/]|[.-]\d)")
_INTL_SEPS = " .-"
# a US number (NXX) NXX-XXXX with an optional leading 1
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
# (possessive, and anchored on a digit: a window of 40 characters costs O(40) steps per start,
# never the cubic backtracking of ``[A-Za-z0-9]*\d[A-Za-z0-9]*``)
_CODE_BEFORE = re.compile(r"(?:\d[A-Za-z0-9]*+|\b[A-Z]{2}\d{2}(?: [A-Z0-9]{1,4})*+)[ -]$")
_CODE_WINDOW = 40
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
# an IBAN character as ISO 13616 digits: (10 ** its digit count, its value); A = 10 .. Z = 35
_IBAN_DIGIT = {c: (100 if c.isalpha() else 10, int(c, 36)) for c in _ALNUM_UPPER}
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
        for m in _INTL_START.finditer(text):
            end = _intl_end(text, m.start(1), len(m.group(1)))
            if end < 0:
                continue
            phone = text[m.start() : end]
            n = sum(c.isdigit() for c in phone)
            if 8 <= n <= 15 and (" " in phone or "-" in phone or n >= 10):
                yield Hit(DETECTOR, "PHONE_NUMBER", 0.7, m.start(), end)
    for m in _PHONE_US.finditer(text):
        yield Hit(DETECTOR, "PHONE_NUMBER", 0.7, m.start(), m.end())
    for m in _PHONE_NATIONAL.finditer(text):
        if _goes_on(text, m.start()):
            continue  # the tail of a longer code (an IBAN's groups)
        if 10 <= sum(c.isdigit() for c in m.group()) <= 11:
            yield Hit(DETECTOR, "PHONE_NUMBER", 0.6, m.start(), m.end())


def _intl_end(text: str, q: int, run: int) -> int:
    """Where the international phone at ``q - 1`` (its "+"; ``run`` digits follow) ends, or
    -1: the farthest end that the regex's groups can reach, which is the match its
    backtracking finds first. A group takes 1 to 5 digits, and only a separator may come
    between two digit runs; so every digit run costs at least ceil(length / 5) groups, an
    end is valid at the end of a digit run, and the farthest valid end is reached with the
    fewest groups (the longest country code, the parenthesised area code when there is one).
    """
    if run > 28:
        return -1  # 3 + 5 * 5 digits at most: no split ends the run
    best = -1
    if run <= 3:
        paren = _INTL_PAREN.match(text, q + run)
        if paren is not None:
            best = _farthest(text, paren.end(), 0)
    for cc in range(min(3, run), 0, -1):
        rest = run - cc
        best = max(best, _farthest(text, q + run, -(-rest // 5)))
    return best


def _farthest(text: str, pos: int, used: int) -> int:
    """The farthest valid end from ``pos`` (the end of a digit run, or right after the area
    code) with ``used`` groups spent, or -1."""
    best = pos if used >= 1 and _INTL_TAIL.match(text, pos) else -1
    while used < 5:
        start = pos + 1 if pos < len(text) and text[pos] in _INTL_SEPS else pos
        digits = _INTL_RUN.match(text, start)
        if digits is None:
            break
        used += -(-(digits.end() - start) // 5)
        pos = digits.end()
        if used > 5:
            break
        if _INTL_TAIL.match(text, pos):
            best = pos
    return best


def _cards(text: str) -> Iterator[Hit]:
    """Within each run of digit groups, the longest card at group boundaries (13..19 digits,
    one kind of separator, an issuer prefix, Luhn), left to right. Linear in the text: a run
    with fewer than 13 characters is skipped at once, and each group of a longer run costs a
    few integer comparisons (a card spans at most 6 grouped or 1 ungrouped group)."""
    for run in _CARD_RUN.finditer(text):
        if run.end() - run.start() < 13:
            continue  # too short for 13 digits
        groups = [m.span() for m in _DIGITS.finditer(text, run.start(), run.end())]
        yield from _cards_in_run(text, groups, 0, _goes_on(text, run.start()))


def _goes_on(text: str, start: int) -> bool:
    """Whether the run starting at ``start`` continues a code (``_CODE_BEFORE``)."""
    before = text[max(0, start - 2) : start]
    if not before.endswith((" ", "-", " \n", "-\n")):
        return False  # ``[ -]$`` cannot match (``$``: the end, or before a final newline)
    return bool(_CODE_BEFORE.search(text, max(0, start - _CODE_WINDOW), start))


def _cards_in_run(
    text: str, groups: list[tuple[int, int]], base: int, goes_on: bool = False
) -> Iterator[Hit]:
    """A card starts the run or is set apart in it (one group, or groups joined by another
    separator than the one around them): the rest of a longer run of groups, such as a
    tracking number, is not a card. Candidates, longest first: up to 6 groups of 3 to 6
    digits ("4111 1111 ...", "3782 822463") with 13 to 19 digits in all, then one group of
    13 to 19 digits."""
    last = len(groups)
    lens = [b - a for a, b in groups]
    cum = [0]
    for n in lens:
        cum.append(cum[-1] + n)
    good_to = [last] * (last + 1)  # good_to[i]: the first group at or after i not of 3..6
    for k in range(last - 1, -1, -1):
        good_to[k] = good_to[k + 1] if 3 <= lens[k] <= 6 else k
    i = 0
    while i < last:
        found = 0
        for j in _candidates(i, last, lens, cum, good_to):
            start, end = base + groups[i][0], base + groups[j - 1][1]
            piece = text[start:end]
            if " " in piece and "-" in piece:
                continue
            if (i or goes_on) and not _set_apart(text, piece, start, end):
                continue
            digits = piece.replace(" ", "").replace("-", "")
            if card_brand_ok(digits) and luhn_ok(digits):
                yield Hit(DETECTOR, "CREDIT_CARD", 1.0, start, end)
                found = j
                break
        i = found if found else i + 1


def _candidates(
    i: int, last: int, lens: list[int], cum: list[int], good_to: list[int]
) -> Iterator[int]:
    """The ends ``j`` (groups ``i..j-1``) that may hold a card, longest first."""
    for j in range(min(last, i + 6, good_to[i]), i + 1, -1):
        n = cum[j] - cum[i]
        if n < 13:
            break  # fewer groups have fewer digits
        if n <= 19:
            yield j
    if 13 <= lens[i] <= 19:
        yield i + 1


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
    """The length of ``raw``'s prefix that is a valid IBAN (0: none), cut at a character.
    One pass: the mod 97 remainder of every prefix of the body (after the 4-character head),
    then each length's check is O(1) (as ``iban_ok``: body then head, as digits, mod 97)."""
    compact = raw.replace(" ", "")
    want = _IBAN_LENGTHS.get(compact[:2])
    longest = min(34, len(compact))
    lengths = ([want] if want <= longest else []) if want else range(longest, 14, -1)
    head = 0
    for c in compact[:4]:
        times, value = _IBAN_DIGIT[c]
        head = (head * times + value) % 97
    shift = 1000000  # the head as digits: 2 letters and 2 digits, 6 digits
    rests = [0]  # rests[k]: the body's first k characters as digits, mod 97
    rest = 0
    for c in compact[4 : max(lengths, default=4)]:
        times, value = _IBAN_DIGIT[c]
        rest = (rest * times + value) % 97
        rests.append(rest)
    for n in lengths:
        if (rests[n - 4] * shift + head) % 97 == 1:
            return _end_of(raw, n)
    return 0


def _end_of(raw: str, n: int) -> int:
    """The offset in ``raw`` right after its ``n``-th character that is not a space."""
    seen = 0
    for i, c in enumerate(raw):
        seen += c != " "
        if seen == n:
            return i + 1
    return len(raw)


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
    return sweep(hits, by_score)


def scan(text: str, entities: Collection[str]) -> list[Hit]:
    """The PII spans of ``entities`` types in ``text`` (category: the entity type). Types
    this engine does not know (``PERSON``...) are ignored: presidio's engine has them."""
    hits: list[Hit] = []
    for entity, finder in _finders().items():
        if entity in entities:
            hits.extend(finder(text))
    return resolve(hits)
