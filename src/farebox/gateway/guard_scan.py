"""The guardrail stage's bounded reading (``gateway.guardrails``): which units of a request
are read within the plan's ``guardrails.max_scan_chars`` (a unit is read in full or not at
all, and the ones not read are returned, so that the stage fails closed on them), layer 1's
reading of a long text in overlapping chunks (``injection_rules`` reads at most
``normalise.HEAD`` + ``normalise.TAIL`` characters of one text), and the replacement, in one
pass per text, of every value a redaction found wherever else it appears in the request.

Linear: the detectors are regular expressions and phrase lookups (measured: 1 MiB of prose
through injection rules, secrets and the built-in PII recognisers in well under a second);
the replacement compiles the values into one trie-shaped pattern (its size is the values'
total length) and scans each text once, whatever the number of values.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Collection, Iterator

from farebox.gateway.guard_texts import Unit
from farebox.guardrails import normalise

CHUNK = normalise.HEAD  # one chunk is read whole by layer 1 (HEAD + TAIL >= CHUNK)
OVERLAP = 512  # a phrase shorter than this is read whole in one chunk or the next
MAX_DEPTH = 64  # nesting of the values' pattern (the regex compiler recurses on it)


def budgeted(units: list[Unit], max_chars: int) -> tuple[list[Unit], list[Unit]]:
    """The units read within ``max_chars`` (each counts ``Unit.cost``), and the ones not."""
    read, unread, left = [], [], max_chars
    for unit in units:
        if not unit.text:
            continue
        if unit.cost <= left:
            left -= unit.cost
            read.append(unit)
        else:
            unread.append(unit)
    return read, unread


def chunks(text: str) -> Iterator[str]:
    """``text`` in pieces layer 1 reads whole, overlapping by ``OVERLAP`` characters."""
    if len(text) <= normalise.HEAD + normalise.TAIL:
        yield text
        return
    step = CHUNK - OVERLAP
    for start in range(0, len(text) - OVERLAP, step):
        yield text[start : start + CHUNK]


def values_pattern(values: Collection[str]) -> re.Pattern[str] | None:
    """One pattern matching any of ``values`` (the longest at a position): a trie of them,
    so a scan costs the same for 2 values as for 20,000."""
    distinct = sorted({v for v in values if v})
    if not distinct:
        return None
    return re.compile(_trie(distinct, 0))


def _trie(values: list[str], depth: int) -> str:
    """The pattern of sorted distinct ``values`` (``""`` among them: may match nothing)."""
    end = bool(values) and values[0] == ""
    rest = values[1:] if end else values
    if not rest:
        return ""
    if depth >= MAX_DEPTH:  # a deep chain of prefixes: the rest as a flat alternation
        body = "|".join(re.escape(v) for v in sorted(rest, key=len, reverse=True))
        return f"(?:{body})?" if end else f"(?:{body})"
    alts = []
    for _, group in itertools.groupby(rest, key=lambda v: v[0]):
        members = list(group)
        common = os.path.commonprefix(members)
        alts.append(re.escape(common) + _trie([v[len(common) :] for v in members], depth + 1))
    if len(alts) == 1 and not end:
        return alts[0]
    return "(?:" + "|".join(alts) + (")?" if end else ")")


def replace_values(
    units: list[Unit], placeholders: dict[str, str], pattern: re.Pattern[str] | None
) -> int:
    """Replace each value of ``placeholders`` (value -> placeholder; ``pattern``: their
    ``values_pattern``) in ``units``, a value split across a unit's parts included; the
    number of replacements."""
    if pattern is None:
        return 0
    done = 0
    for unit in units:
        edits = [(m.start(), m.end(), placeholders[m.group()]) for m in pattern.finditer(unit.text)]
        if edits:
            unit.edit(edits)
            done += len(edits)
    return done
