"""Typed placeholders (issue 15): redact and restore, streams cut anywhere, client literals
that look like placeholders, and the streaming output redactor."""

from __future__ import annotations

import random

from bench.pii_data import card, email, iban, ip, phone, secret, ssn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.guardrails import Hit
from farebox.guardrails import pii_patterns, secrets
from farebox.guardrails.placeholders import (
    _PLACEHOLDER,
    OutputRedactor,
    Redactor,
    StreamRestorer,
    redact_output,
)

ENTITIES = pii_patterns.ENTITIES


def scan_all(text: str) -> list[Hit]:
    return pii_patterns.resolve(pii_patterns.scan(text, ENTITIES) + secrets.scan(text))


def scan_pii(text: str) -> list[Hit]:
    return pii_patterns.scan(text, ENTITIES)


def test_typed_placeholders_same_value_same_placeholder() -> None:
    text = "a@example.com, +44 20 7946 0958, a@example.com, b@example.com, 4111 1111 1111 1111"
    r = Redactor()
    out = r.redact(text, scan_all(text))
    assert out == "<EMAIL_1>, <PHONE_1>, <EMAIL_1>, <EMAIL_2>, <CARD_1>"
    assert (
        r.restore("Sure: <EMAIL_2> and <CARD_1>.") == "Sure: b@example.com and 4111 1111 1111 1111."
    )
    assert r.restore("<EMAIL_9> stays") == "<EMAIL_9> stays"


def test_each_prefix() -> None:
    text = ("x@example.com +1 415 555 0132 4111111111111111 GB82WEST12345698765432 536-22-1234 "
            "10.0.0.1 AKIAIOSFODNN7EXAMPLE")  # fmt: skip
    hits = [*scan_all(text), Hit("pii", "PERSON", 0.85, 0, 0)]
    out = Redactor().redact(text, hits)
    assert out == "<EMAIL_1> <PHONE_1> <CARD_1> <IBAN_1> <SSN_1> <IP_1> <SECRET_1>"
    assert Redactor().redact("Ann Lee", [Hit("pii", "PERSON", 0.9, 0, 7)]) == "<PERSON_1>"
    assert (
        Redactor().redact("x", [Hit("pii", "us driver-license", 0.9, 0, 1)])
        == "<US_DRIVER_LICENSE_1>"
    )


def test_a_literal_placeholder_in_the_client_text_is_numbered_past() -> None:
    text = "Template: dear <EMAIL_1>, <EMAIL_3>; the real one is a@example.com"
    r = Redactor()
    out = r.redact(text, scan_all(text))
    assert out == "Template: dear <EMAIL_1>, <EMAIL_3>; the real one is <EMAIL_4>"
    answer = "I kept <EMAIL_1> and <EMAIL_3>, and wrote to <EMAIL_4>."
    assert r.restore(answer) == "I kept <EMAIL_1> and <EMAIL_3>, and wrote to a@example.com."


def test_reserve_covers_every_text_of_the_request() -> None:
    first, second = "mail a@example.com", "the literal <EMAIL_1> in a later message"
    r = Redactor()
    r.reserve(first, second)
    assert r.redact(first, scan_all(first)) == "mail <EMAIL_2>"
    assert r.redact(second, scan_all(second)) == second
    assert r.restore("<EMAIL_1> <EMAIL_2>") == "<EMAIL_1> a@example.com"


def test_a_value_that_looks_like_a_placeholder_is_not_expanded_twice() -> None:
    r = Redactor()
    out = r.redact("<CARD_1>x", [Hit("pii", "EMAIL_ADDRESS", 1.0, 0, 9)])
    assert out == "<EMAIL_1>"
    assert r.restore("<EMAIL_1><CARD_1>") == "<CARD_1>x<CARD_1>"


_GENERATORS = (email, phone, card, iban, ssn, ip, secret)
_PLAIN = st.text(alphabet=st.sampled_from(list("ab <>_19EMAILCARD_.,:@+-\n")), max_size=12)
_LITERALS = st.sampled_from(["<EMAIL_1>", "<CARD_2>", "<PHONE_1", "<SECRET_1>", "<", ">", "<<"])


@st.composite
def texts_with_entities(draw: st.DrawFn) -> str:
    r = random.Random(draw(st.integers(0, 2**32)))
    parts = draw(st.lists(st.one_of(_PLAIN, _LITERALS, st.sampled_from(_GENERATORS)), max_size=12))
    return " ".join(p if isinstance(p, str) else p(r) for p in parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_with_entities())
def test_restore_of_redact_is_the_identity(text: str) -> None:
    r = Redactor()
    hits = scan_all(text)
    redacted = r.redact(text, hits)
    assert r.restore(redacted) == text
    for hit in hits:
        value = text[hit.start : hit.end]
        if len(value) > 12:  # short values (an IP) may recur inside other text by chance
            assert value not in redacted


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts_with_entities(), st.data())
def test_stream_restore_equals_the_whole_restore_for_any_split(
    text: str, data: st.DataObject
) -> None:
    r = Redactor()
    redacted = r.redact(text, scan_all(text))
    # an answer: the redacted text, pieces of its placeholders, and the placeholders again
    extra = data.draw(st.lists(st.sampled_from([*r.values, "<", "<E", "<EMAIL_", ">", "x"]),
                               max_size=8))  # fmt: skip
    answer = redacted + "".join(extra)
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=len(answer) + 1))
    stream = r.streaming()
    out = "".join(stream.feed(d) for d in _split(answer, cuts)) + stream.flush()
    assert out == r.restore(answer)


def test_stream_holds_back_only_a_bounded_prefix_of_a_known_placeholder() -> None:
    r = Redactor()
    r.redact("a@example.com", [Hit("pii", "EMAIL_ADDRESS", 1.0, 0, 13)])
    stream = StreamRestorer(r)
    assert stream.feed("Hello <EMA") == "Hello "
    assert stream.feed("IL_1") == ""
    assert stream.feed("> and <EMAIL_2> and <b") == "a@example.com and <EMAIL_2> and <b"
    assert stream.feed("<" * 100) == "<" * 99  # only a tail that could still become one
    assert stream.flush() == "<"
    assert StreamRestorer(Redactor()).feed("<EMA") == "<EMA"  # nothing redacted: pass through


@st.composite
def answers(draw: st.DrawFn) -> str:
    r = random.Random(draw(st.integers(0, 2**32)))
    words = st.sampled_from(["the", "call", "me", "at", "or", "\n", "card:", "ok.", "x" * 70])
    parts = draw(st.lists(st.one_of(words, st.sampled_from(_GENERATORS[:6])), max_size=40))
    return " ".join(p if isinstance(p, str) else p(r) for p in parts)


def verbatim(out: str, redactor: Redactor) -> set[int]:
    """The positions of the original text that ``out`` (redacted) shows as they are."""
    shown: set[int] = set()
    pos = last = 0
    for m in _PLACEHOLDER.finditer(out):
        if m.group(0) in redactor.values:
            shown.update(range(pos, pos + m.start() - last))
            pos += m.start() - last + len(redactor.values[m.group(0)])
            last = m.end()
    shown.update(range(pos, pos + len(out) - last))
    return shown


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers(), st.data(), st.sampled_from([48, 64]))
def test_output_redactor_never_leaks_what_the_whole_redactor_redacts(
    text: str, data: st.DataObject, hold: int
) -> None:
    _, hits = redact_output(text, scan_pii)
    cuts = data.draw(st.lists(st.integers(0, 10_000), max_size=min(len(text) + 1, 60)))
    redactor = Redactor()
    stream = OutputRedactor(scan_pii, redactor, hold=hold, max_hold=256)
    out = "".join(stream.feed(d) for d in _split(text, cuts)) + stream.flush()
    assert redactor.restore(out) == text
    shown = verbatim(out, redactor)
    for hit in hits:  # not one character of what the whole redactor hides
        assert shown.isdisjoint(range(hit.start, hit.end)), (hit, out)
    assert len(stream.hits) >= 1 if hits else True


def test_output_redactor_holds_a_bounded_tail_and_reports_categories() -> None:
    stream = OutputRedactor(scan_pii, hold=16, max_hold=64)
    first = stream.feed("Write to a@example.com today, or call +1 415 555 0132 tomorrow please")
    assert "a@example.com" not in first and first.startswith("Write to <EMAIL_1> today")
    rest = stream.feed("q" * 200)  # no whitespace: past max_hold it is cut anyway
    assert len(rest) > 0
    tail = stream.flush()
    assert (first + rest + tail).count("q") == 200
    assert stream.categories == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
    assert stream.feed("") == "" and stream.flush() == ""


def test_redact_output_whole() -> None:
    out, hits = redact_output("card 4111111111111111 ok", scan_pii)
    assert out == "card <CARD_1> ok" and [h.category for h in hits] == ["CREDIT_CARD"]


@settings(max_examples=200, deadline=None)
@given(st.text(), st.lists(st.integers(0, 500), max_size=20))
def test_arbitrary_text_through_every_path_never_raises(text: str, cuts: list[int]) -> None:
    r = Redactor()
    redacted = r.redact(text, scan_all(text))
    assert r.restore(redacted) == text
    stream = r.streaming()
    out = "".join(stream.feed(d) for d in _split(redacted, cuts)) + stream.flush()
    assert out == text
    o = OutputRedactor(scan_pii)
    assert isinstance("".join(o.feed(d) for d in _split(text, cuts)) + o.flush(), str)
