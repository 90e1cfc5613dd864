"""Layer 1's input: a text folded so that one rule set sees through the cheap disguises.

``normalise(text)`` returns one string, lower-cased, in which:

- lone surrogates and other unencodable code points are replaced (never raises on any ``str``);
- invisible format characters (zero-width spaces and joiners, bidi controls, the soft hyphen,
  variation selectors) are removed, and Unicode tag characters (``U+E0020..U+E007E``, "ASCII
  smuggling") are read as the ASCII they shadow;
- Unicode compatibility folding (NFKC's, through NFKD) turns full-width and styled letters
  (``ｉｇｎｏｒｅ``, mathematical bold ...) into plain ones, and accents are dropped
  (``précédentes`` -> ``precedentes``, ``Einschränkungen`` -> ``einschrankungen``);
- Cyrillic and Greek look-alikes fold to their Latin twins (``іgnоrе`` with Cyrillic і, о, е);
- letters spelt out with separators (``i g n o r e``, ``i.g.n.o.r.e``) are joined;

and to which are appended, each on its own line:

- a leetspeak fold (``1gn0r3`` -> ``ignore``), when a word mixes letters and leet digits;
- the decoded text of suspicious spans: base64 runs and hex runs that decode to mostly
  printable text (and base32, binary, ascii85/base85, Morse, percent- and backslash-escapes),
  and a rot13 or backwards reading when the text names rot13 or holds key words written so.

Bounded: only the first ``HEAD`` and the last ``TAIL`` characters are read (a 4 MB message
costs as much as a 20 kB one), at most ``MAX_SPANS`` spans are decoded, each of at most
``MAX_SPAN`` characters. Pure and stateless: the tables are module-level constants.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
import urllib.parse

HEAD = 16_384  # characters read from the start of a text
TAIL = 4_096  # and from its end (an instruction appended to a long document)
MAX_SPANS = 8  # encoded spans decoded per text
MAX_SPAN = 4_096  # characters of one encoded span
PRINTABLE = 0.9  # share of printable characters a decoded span needs to count as text

# invisible characters removed outright: zero-width space/joiners, word joiner, bidi marks
# and embeddings/isolates, the BOM, soft hyphen, Mongolian vowel separator, invisible
# operators, variation selectors, the Hangul fillers
_INVISIBLE = dict.fromkeys(
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0]
    + list(range(0x200B, 0x2010))
    + list(range(0x202A, 0x202F))
    + list(range(0x2060, 0x2070))
    + list(range(0xFE00, 0xFE10))
)
# Unicode tag characters shadow ASCII one to one (U+E0041 is an invisible "A")
_TAGS = {0xE0000 + c: c for c in range(0x20, 0x7F)} | {0xE0001: None, 0xE007F: None}
_STRIP = str.maketrans(_INVISIBLE | _TAGS)

# Cyrillic and Greek letters that look like Latin ones (lower case: applied after lower())
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "ё": "e", "һ": "h", "і": "i",
        "ї": "i", "ј": "j", "к": "k", "ӏ": "l", "м": "m", "н": "h", "о": "o", "р": "p",
        "ԛ": "q", "г": "r", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԝ": "w", "ү": "y",
        "ь": "b", "п": "n", "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i",
        "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
        "ϲ": "c", "ϳ": "j", "ѵ": "v", "ɡ": "g", "ı": "i", "ɩ": "i", "ℓ": "l",
    }
)  # fmt: skip
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
     "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"}
)  # fmt: skip

# a word with a leet character between letters ("1gn0re", "pr0mpt", "syst3m")
_LEET_WORD = re.compile(r"[a-z][013457@$!|+][a-z0-9@$!|+]|[013457@$|][a-z]{2}")
# single letters spelt out with one separator: "i g n o r e", "i.g.n.o.r.e", "i-g-n-o-r-e"
_SPACED = re.compile(r"(?<![^\W_])(?:[^\W\d_][ .\-_*]){3,}[^\W\d_](?![^\W_])")
_SEPARATORS = re.compile(r"[ .\-_*]")
# encoded spans (read in the original text: base64 is case-sensitive)
_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,4096}={0,2}")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){12,2048}(?![0-9A-Fa-f])")
_ROT13_NAMED = ("rot13", "rot-13", "rot 13", "rot_13", "caesar")
# key words of an injection, written in rot13 or backwards: then the text is read so too
_ROT13_WORDS = ("vtaber", "qvfertneq", "sbetrg", "vafgehpgvba", "cebzcg", "flfgrz", "erirny")
_REVERSED_WORDS = ("erongi", "dragersid", "snoitcurtsni", "tpmorp", "metsys", "laever")
# anything a decoder below could read: a text without one skips them all
_LONG_RUN = 16  # a word this long may be an encoded run
_DIGITS = re.compile(r"[0-9@$!|+]")  # a text without one has no leet word and no binary
_SPACED_GATE = re.compile(r"[ .\-_*][^\W\d_][ .\-_*][^\W\d_][ .\-_*]")
_BASE32 = re.compile(r"(?<![A-Z2-7])[A-Z2-7]{24,4096}={0,6}")
_BINARY = re.compile(r"(?:[01]{8}[ ,]?){6,1024}")
_ASCII85 = re.compile(r"<~[!-u\s]{8,4096}?~>")
_BASE85 = re.compile(
    r"(?<![0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~])[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{24,4096}"
)
_MORSE = re.compile(r"(?:[.\-]{1,6}(?: {1,3}| ?/ ?)){7,2048}[.\-]{1,6}")
_MORSE_CODE = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g",
    "....": "h", "..": "i", ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n",
    "---": "o", ".--.": "p", "--.-": "q", ".-.": "r", "...": "s", "-": "t", "..-": "u",
    "...-": "v", ".--": "w", "-..-": "x", "-.--": "y", "--..": "z", ".----": "1",
    "..---": "2", "...--": "3", "....-": "4", ".....": "5", "-....": "6", "--...": "7",
    "---..": "8", "----.": "9", "-----": "0",
}  # fmt: skip
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2}[^%]{0,12}){3}")
_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})|\\x([0-9A-Fa-f]{2})")
_LETTERS = re.compile(r"[A-Za-z]{3,}")
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def window(text: str) -> str:
    """The part of ``text`` that is read: all of it, or its head and its tail."""
    if len(text) <= HEAD + TAIL:
        return text
    return text[:HEAD] + "\n" + text[-TAIL:]


def fold(text: str) -> str:
    """``text`` cleaned, NFKC-normalised, lower-cased and homoglyph-folded (no decoding)."""
    if text.isascii():
        clean = text.lower()  # nothing invisible, nothing to fold: the common case
    else:
        if _lone(text):
            text = text.encode("utf-8", "replace").decode("utf-8", "replace")
        # compatibility forms fold as under NFKC; the accents go too (é -> e, ü -> u)
        clean = unicodedata.normalize("NFKD", text.translate(_STRIP))
        clean = _MARKS.sub("", clean).lower().translate(_HOMOGLYPHS).translate(_STRIP)
    if _SPACED_GATE.search(clean) and _SPACED.search(clean):
        clean = _SPACED.sub(lambda m: _SEPARATORS.sub("", m.group()), clean)
    return clean


def _lone(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (``str.encode`` would raise)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable_text(raw: bytes) -> str | None:
    """``raw`` as text when it reads like text: UTF-8, mostly printable, with a word."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 6:
        return None
    printable = sum(1 for c in text if c.isprintable() or c in "\n\t\r")
    if printable < PRINTABLE * len(text) or not _LETTERS.search(text):
        return None
    return text


def _b64(span: str) -> str | None:
    if not _mixed(span):
        return None  # an ordinary long word or identifier, not base64
    body = span.rstrip("=")
    body = body + "=" * (-len(body) % 4)
    alt = b"-_" if ("-" in body or "_" in body) else None
    try:
        raw = base64.b64decode(body, altchars=alt, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _printable_text(raw)


def _mixed(span: str) -> bool:
    """Base64 of text mixes cases (or has digits); snake_case or a long word does not."""
    return (not span.islower() and not span.isupper()) or any(c.isdigit() for c in span)


def _b32(span: str) -> str | None:
    body = span.rstrip("=")
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        return None
    return _printable_text(raw)


def _hex(span: str) -> str | None:
    try:
        raw = bytes.fromhex(span.replace(" ", "").replace(":", ""))
    except ValueError:
        return None
    return _printable_text(raw)


def _binary(span: str) -> str | None:
    bits = span.replace(" ", "").replace(",", "")
    raw = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8))
    return _printable_text(raw)


def _a85(span: str) -> str | None:
    try:
        raw = base64.a85decode(span.encode("ascii"), adobe=True, ignorechars=b" \t\r\n")
    except (ValueError, UnicodeEncodeError):
        return None
    return _printable_text(raw)


def _b85(span: str) -> str | None:
    if sum(1 for c in span if not c.isalnum()) < 3:
        return None  # a long word or an identifier: base64's and base32's, or nobody's
    try:
        raw = base64.b85decode(span.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    return _printable_text(raw)


def _morse(span: str) -> str | None:
    words = []
    for word in re.split(r" ?/ ?| {3}", span):
        letters = [_MORSE_CODE.get(code) for code in word.split()]
        if None in letters:
            return None
        words.append("".join(c for c in letters if c))
    return _printable_text(" ".join(words).encode())


_RUNS = (
    (_HEX, _hex),
    (_BINARY, _binary),
    (_BASE32, _b32),
    (_B64, _b64),
    (_ASCII85, _a85),
    (_BASE85, _b85),
)


def decoded_spans(text: str) -> list[str]:
    """The readable text hidden in ``text``: its base64, base32, hex and binary runs that
    decode to text (at most ``MAX_SPANS``), its percent- and backslash-escapes, and its rot13
    or backwards reading when it names rot13 or holds key words written so."""
    found: list[str] = []
    if _maybe_encoded(text):
        _decode_runs(text, found)
    lowered = text.lower()
    if any(word in lowered for word in _ROT13_NAMED + _ROT13_WORDS):
        found.append(codecs.encode(text, "rot13"))
    if any(word in lowered for word in _REVERSED_WORDS):
        found.append(text[::-1])
    return found


def _maybe_encoded(text: str) -> bool:
    """Whether a decoder could read anything in ``text`` (cheap checks, C speed)."""
    return (
        "%" in text
        or "\\" in text
        or ("01" in text and _BINARY.search(text) is not None)
        or " .-" in text
        or " -." in text
        or " .." in text
        or " --" in text
        or max(map(len, text.split()), default=0) >= _LONG_RUN
    )


def _decode_runs(text: str, found: list[str]) -> None:
    """Appends to ``found`` the text of ``text``'s encoded runs and escapes."""
    for pattern, decode in _RUNS:
        for match in pattern.finditer(text):
            if len(found) >= MAX_SPANS:
                break
            plain = decode(match.group())
            if plain is not None:
                found.append(plain)
    if _PERCENT.search(text):
        found.append(urllib.parse.unquote(text))
    if ".-" in text or "-." in text:
        for match in _MORSE.finditer(text):
            plain = _morse(match.group())
            if plain is not None and len(found) < MAX_SPANS:
                found.append(plain)
    if "\\u" in text or "\\x" in text:
        found.append(_ESCAPE.sub(_unescape, text))


def _unescape(match: re.Match[str]) -> str:
    code = int(match.group(1) or match.group(2), 16)
    return chr(code) if not 0xD800 <= code <= 0xDFFF else "?"


def normalise(text: str) -> str:
    """The string layer 1's rules read: ``text``'s fold, then its leet fold and decoded spans,
    each on its own line. Never raises; bounded by ``HEAD``, ``TAIL`` and ``MAX_SPANS``."""
    if not isinstance(text, str):
        return ""
    read = window(text)
    base = fold(read)
    parts = [base]
    if _DIGITS.search(base) and _LEET_WORD.search(base):
        parts.append(base.translate(_LEET))
    if len(read) >= 16:
        parts.extend(fold(plain) for plain in decoded_spans(read))
    return "\n".join(parts)
