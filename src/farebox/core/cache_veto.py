"""The semantic cache's veto: two questions that embed close may still want different answers.

``vetoed(cached, new)`` names why a semantic hit must be refused (``"numbers"``, ``"dates"``,
``"negation"`` or ``"entities"``), or is ``None``. Sentence embeddings barely move when an order
number, a weekday, a "not" or a product name changes ("turn dark mode on" and "... off" are 0.96
apart with MiniLM), so these are compared as words. Deterministic, symmetric, case- and
whitespace-blind, standard library only, and a few tens of microseconds for a short question.
A veto costs a hit, never a wrong answer: when in doubt it refuses.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType

_WORD = re.compile(r"[^\W_]+")
_CONTRACTED_NOT = re.compile(r"n['\u2019]t\b")
_SENTENCE_END = re.compile(r"[.!?:;\n]")

# dates and times, matched on the case-folded text before numbers are read
_TIME = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\b|\b(\d{1,2}):(\d{2})\b")
_NUMERIC_DATE = re.compile(r"\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

_MONTHS: Mapping[str, int] = MappingProxyType(
    {
        "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
        "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
        "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
        "sept": 9, "oct": 10, "nov": 11, "dec": 12,
    }
)  # fmt: skip
_WEEKDAYS: Mapping[str, int] = MappingProxyType(
    {
        "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6,
        "sunday": 7, "mon": 1, "tue": 2, "tues": 2, "wed": 3, "thu": 4, "thur": 4, "thurs": 4,
        "fri": 5, "sat": 6, "sun": 7, "weekday": 8, "weekdays": 8, "weekend": 9, "weekends": 9,
    }
)  # fmt: skip
# words that are also months or weekdays only when a date is near: "may I", "march on", "sun"
_AMBIGUOUS_DATES = frozenset(
    {"may", "march", "mar", "jan", "sat", "sun", "wed", "mon", "fri", "dec", "sep", "oct"}
)
_DATE_CONTEXT = frozenset(
    {"in", "on", "of", "until", "till", "since", "by", "before", "after", "from", "to",
     "early", "late", "mid", "next", "last", "this", "every", "through", "during"}
)  # fmt: skip
_RELATIVE = frozenset(
    {"today", "tonight", "tomorrow", "yesterday", "morning", "afternoon", "evening",
     "overnight", "midnight", "noon", "midday", "daily", "weekly", "monthly", "yearly",
     "annually", "hourly", "quarterly", "spring", "summer", "autumn", "fall", "winter",
     "ago", "next", "last"}
)  # fmt: skip
_NUMBER_WORDS: Mapping[str, float] = MappingProxyType(
    {
        "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
        "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
        "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
        "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
        "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
        "million": 10**6, "billion": 10**9, "dozen": 12, "first": 1, "second": 2, "third": 3,
        "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
        "once": 1, "twice": 2, "single": 1, "double": 2, "triple": 3, "half": 0.5,
        "quarter": 0.25, "both": 2, "pair": 2, "couple": 2,
    }
)  # fmt: skip
_NEGATORS = frozenset(
    {"not", "no", "never", "without", "cannot", "nothing", "none", "nobody", "nowhere", "non",
     "neither", "nor", "unable", "dont", "cant", "wont", "isnt", "arent", "wasnt", "werent",
     "doesnt", "didnt", "shouldnt", "wouldnt", "couldnt", "havent", "hasnt", "hadnt", "aint"}
)  # fmt: skip
_ANTONYMS = (
    ("open", "opens", "opened", "opening"), ("close", "closed", "closes", "closing", "shut"),
    ("on",), ("off",),
    ("enable", "enabled", "enables", "enabling", "activate", "activated"),
    ("disable", "disabled", "disables", "disabling", "deactivate", "deactivated"),
    ("increase", "increased", "increases", "raise", "raised", "higher", "more", "up", "upgrade"),
    ("decrease", "decreased", "decreases", "lower", "lowered", "less", "fewer", "down",
     "reduce", "reduced", "downgrade"),
    ("before", "prior", "earlier", "within"), ("after", "later", "following"),
    ("under", "below", "beneath", "underneath"), ("over", "above", "exceeding", "beyond"),
    ("full", "whole", "entire", "complete"), ("part", "partial", "partly", "partially"),
    ("allow", "allowed", "allows", "permit", "permitted", "accept", "accepted", "approve",
     "approved"),
    ("deny", "denied", "denies", "block", "blocked", "forbid", "forbidden", "reject",
     "rejected", "ban", "banned", "decline", "declined"),
    ("add", "added", "adds", "adding", "include", "included", "join"),
    ("remove", "removed", "removes", "removing", "delete", "deleted", "exclude", "excluded",
     "leave"),
    ("eat", "eating", "take", "taking", "use", "using", "drink", "drinking"),
    ("avoid", "avoiding", "skip", "skipping", "stop", "stopping", "quit"),
    ("safe", "safely"), ("dangerous", "risky", "harmful"),
    ("start", "starts", "started", "begin", "begins"), ("end", "ends", "ended", "finish"),
    ("buy", "buying", "purchase", "bought"), ("sell", "selling", "sold", "refund", "return"),
    ("max", "maximum", "most", "highest", "largest", "biggest"),
    ("min", "minimum", "least", "lowest", "smallest"),
    ("import", "upload", "imports"), ("export", "download", "exports"),
    ("in", "inside", "into"), ("out", "outside"),
    ("with",), ("without",),
    ("send", "sent", "sending"), ("receive", "received", "receiving"),
    ("login", "log", "sign", "signin"), ("logout", "signout"),
    ("subscribe", "subscribed"), ("unsubscribe", "unsubscribed", "cancel", "cancelled"),
    ("true", "correct", "right"), ("false", "incorrect", "wrong"),
    ("win", "gain", "profit"), ("lose", "lost", "loss"),
    ("pass", "passed"), ("fail", "failed"),
    ("hot", "warm"), ("cold", "cool"),
    ("early", "earliest"), ("late", "latest", "overdue"),
)  # fmt: skip
_GREETINGS = frozenset({"morning", "afternoon", "evening", "night"})
# capitalised words that name nothing
_NOT_ENTITIES = frozenset({"ok", "okay", "hi", "hello", "hey", "please", "thanks", "faq"})
# words whose two sides swap roles: "from savings to current" / "from current to savings"
_DIRECTIONS = ("to", "into", "from", "than", "vs", "versus", "onto")
_FUNCTION_WORDS = frozenset(
    {"the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "of", "for", "and",
     "or", "i", "me", "we", "you", "it", "is", "are", "do", "does", "how", "what", "can",
     "this", "that", "on", "in", "at", "with", "s", "be", "get", "there", "which", "should",
     *_DIRECTIONS}
)  # fmt: skip
_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")


def _index_antonyms() -> Mapping[str, frozenset[int]]:
    """word -> the groups it belongs to; groups 2k and 2k+1 are opposites."""
    index: dict[str, set[int]] = {}
    for group, words in enumerate(_ANTONYMS):
        for word in words:
            index.setdefault(word, set()).add(group)
    return MappingProxyType({word: frozenset(groups) for word, groups in index.items()})


_ANTONYM_GROUPS = _index_antonyms()


class _Features:
    """What the veto compares, read once per text."""

    __slots__ = ("dates", "entities", "negators", "numbers", "sequence", "words")

    def __init__(self, text: str) -> None:
        folded = text.casefold()
        self.dates: Counter[str] = Counter()
        rest = _NUMERIC_DATE.sub(lambda m: self._date(m.group()), folded)
        rest = _TIME.sub(self._time, rest)
        self.sequence = _WORD.findall(folded)
        self.words = frozenset(self.sequence)
        self.numbers = Counter(_canonical_number(n) for n in _NUMBER.findall(rest))
        self.negators = len(_CONTRACTED_NOT.findall(rest))
        tokens = _WORD.findall(rest)
        for position, token in enumerate(tokens):
            self._read(token, tokens, position)
        self.entities = _entities(text)

    def _date(self, value: str) -> str:
        self.dates["d:" + "-".join(str(int(p)) for p in re.split(r"[-/.]", value))] += 1
        return " "

    def _time(self, match: re.Match[str]) -> str:
        if match.group(4) is not None:
            hour, minute = int(match.group(4)), int(match.group(5))
        else:
            hour, minute = int(match.group(1)) % 12, int(match.group(2) or 0)
            hour += 12 if match.group(3) == "p" else 0
        self.dates[f"t:{hour}:{minute}"] += 1
        return " "

    def _read(self, token: str, tokens: list[str], position: int) -> None:
        if token in _NEGATORS:
            self.negators += 1
        if token in _NUMBER_WORDS:
            self.numbers[str(_NUMBER_WORDS[token])] += 1
        if token in _RELATIVE and not _greeting(tokens, position):
            self.dates["r:" + token] += 1
        date = _MONTHS.get(token), _WEEKDAYS.get(token)
        if date != (None, None) and (token not in _AMBIGUOUS_DATES or _near_date(tokens, position)):
            self.dates[f"m:{date[0]}" if date[0] else f"w:{date[1]}"] += 1


def _greeting(tokens: list[str], position: int) -> bool:
    """ "Morning!", "good evening": a greeting, not a time of day."""
    return tokens[position] in _GREETINGS and (position == 0 or tokens[position - 1] == "good")


def _near_date(tokens: list[str], position: int) -> bool:
    before = tokens[position - 1] if position else ""
    after = tokens[position + 1] if position + 1 < len(tokens) else ""
    return before in _DATE_CONTEXT or before[:1].isdigit() or after[:1].isdigit()


def _canonical_number(text: str) -> str:
    digits = text.replace(",", "")
    if "." in digits:
        whole, _, fraction = digits.partition(".")
        fraction = fraction.rstrip("0").replace(".", "")
        digits = f"{whole.lstrip('0') or '0'}.{fraction}" if fraction else whole
    return digits.lstrip("0") or "0"


def _entities(text: str) -> frozenset[str]:
    """Case-folded capitalised words that do not start a sentence, and mixed-case words
    (``iPhone``, ``PayPal``) anywhere: names of people, places, products and brands."""
    found: set[str] = set()
    for sentence in _SENTENCE_END.split(text):
        for position, word in enumerate(_WORD.findall(sentence)):
            if word.islower() or word.isdigit():
                continue
            upper = sum(c.isupper() for c in word)
            capitalised = word[0].isupper() and position > 0 and word != "I"
            mixed = upper and not word[0].isupper() or upper > 1 and not word.isupper()
            if (capitalised or mixed) and word.casefold() not in _NOT_ENTITIES:
                found.add(word.casefold())
    return frozenset(found)


def _opposed(only_a: frozenset[str], only_b: frozenset[str]) -> bool:
    """A word of one text and a word of the other are opposites (a listed pair, or the same
    word with a negating prefix: safe/unsafe, legal/illegal, like/dislike)."""
    groups_a = {g for word in only_a for g in _ANTONYM_GROUPS.get(word, ())}
    if any(g ^ 1 in groups_a for word in only_b for g in _ANTONYM_GROUPS.get(word, ())):
        return True
    for shorter, longer in ((only_a, only_b), (only_b, only_a)):
        for word in longer:
            for prefix in _PREFIXES:
                stem = word[len(prefix) :]
                if word.startswith(prefix) and len(stem) >= 3 and stem in shorter:
                    return True
    return False


def _swapped(a: list[str], b: list[str]) -> bool:
    """Words on either side of a direction word (``from``, ``to``, ``than``) changed sides."""
    for marker in _DIRECTIONS:
        if a.count(marker) != 1 or b.count(marker) != 1:
            continue
        left_a, right_a = _sides(a, marker)
        left_b, right_b = _sides(b, marker)
        if (left_a & right_b) - left_b and (right_a & left_b) - right_b:
            return True
    return False


def _sides(words: list[str], marker: str) -> tuple[set[str], set[str]]:
    at = words.index(marker)
    return set(words[:at]) - _FUNCTION_WORDS, set(words[at + 1 :]) - _FUNCTION_WORDS


def vetoed(cached: str, new: str) -> str | None:
    """Why ``new`` must not be answered with the answer cached for ``cached``, or ``None``."""
    if cached == new:
        return None
    a, b = _Features(cached), _Features(new)
    if a.dates != b.dates:
        return "dates"
    if a.numbers != b.numbers:
        return "numbers"
    only_a, only_b = a.words - b.words, b.words - a.words
    if a.negators != b.negators or _opposed(only_a, only_b):
        return "negation"
    if (a.entities - b.words) or (b.entities - a.words) or _swapped(a.sequence, b.sequence):
        return "entities"
    return None
