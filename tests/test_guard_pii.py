"""The built-in PII recognisers (issue 15): exact spans, Luhn, mod 97 and SSN rules, phones
that need separators or a leading +, the generated set's hard negatives, and arbitrary text."""

from __future__ import annotations

import random

import pytest
from bench.pii_data import _negatives, card, iban, ssn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.guardrails import pii_patterns
from farebox.guardrails.pii_patterns import ENTITIES, iban_ok, luhn_ok, scan, ssn_ok


def found(text: str, entity: str) -> list[str]:
    return [text[h.start : h.end] for h in scan(text, [entity]) if h.category == entity]


@pytest.mark.parametrize(
    ("entity", "value"),
    [
        ("EMAIL_ADDRESS", "jane.doe+news@example.co.uk"),
        ("EMAIL_ADDRESS", "o.brien_x@mail.example.org"),
        ("PHONE_NUMBER", "+44 20 7946 0958"),
        ("PHONE_NUMBER", "+1 (415) 555-0132"),
        ("PHONE_NUMBER", "(415) 555-0132"),
        ("PHONE_NUMBER", "415-555-0132"),
        ("PHONE_NUMBER", "415.555.0132"),
        ("PHONE_NUMBER", "+4915112345678"),
        ("PHONE_NUMBER", "+33 1 42 68 53 00"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),
        ("CREDIT_CARD", "5555-5555-5555-4444"),
        ("CREDIT_CARD", "378282246310005"),
        ("CREDIT_CARD", "3782 822463 10005"),
        ("CREDIT_CARD", "6011111111111117"),
        ("IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
        ("IBAN_CODE", "GB82WEST12345698765432"),
        ("IBAN_CODE", "FR14 2004 1010 0505 0001 3M02 606"),
        ("IBAN_CODE", "NL91ABNA0417164300"),
        ("US_SSN", "536-22-1234"),
        ("US_SSN", "536 22 1234"),
        ("IP_ADDRESS", "192.168.0.1"),
        ("IP_ADDRESS", "255.255.255.255"),
        ("IP_ADDRESS", "2001:db8::8a2e:370:7334"),
        ("IP_ADDRESS", "fe80::1ff:fe23:4567:890a"),
        ("URL", "https://example.com/a?b=1"),
    ],
)
def test_each_entity_has_its_exact_span(entity: str, value: str) -> None:
    text = f"Note: {value}. Thanks"
    assert found(text, entity) == [value]
    hit = scan(text, [entity])[0]
    assert text.index(value) == hit.start
    assert 0.0 < hit.score <= 1.0


@pytest.mark.parametrize(
    ("entity", "text"),
    [
        ("PHONE_NUMBER", "Order #4815162342 shipped"),
        ("PHONE_NUMBER", "order number 4815162342"),
        ("PHONE_NUMBER", "call 4155550132"),  # no separators: an id as much as a phone
        ("PHONE_NUMBER", "on 2024-05-12 at 10:30"),
        ("PHONE_NUMBER", "on 12.05.2024 or 12/05/2024"),
        ("PHONE_NUMBER", "tracking 1Z999AA10123456784"),
        ("PHONE_NUMBER", "ext 555-0132"),
        ("PHONE_NUMBER", "(123) 555-0132"),  # area codes start 2-9
        ("PHONE_NUMBER", "SKU 123-456-789"),
        ("CREDIT_CARD", "4111 1111 1111 1112"),  # Luhn fails
        ("CREDIT_CARD", "1234 5678 9012 3452"),  # Luhn passes, no issuer starts with 1
        ("CREDIT_CARD", "USPS 9400 1000 0000 0000 0000 00"),
        ("CREDIT_CARD", "4111 1111-1111 1111"),  # mixed separators
        ("CREDIT_CARD", "timestamp 1700000000123"),
        ("IBAN_CODE", "DE89 3704 0044 0532 0130 01"),  # mod 97 fails
        ("IBAN_CODE", "GB00WEST12345698765432"),
        ("US_SSN", "000-12-3456 666-12-3456 912-12-3456 536-00-1234 536-22-0000"),
        ("US_SSN", "536221234"),  # no separators
        ("US_SSN", "536-22 1234"),  # mixed separators
        ("US_SSN", "078-05-1120"),  # the Woolworth wallet card
        ("IP_ADDRESS", "version 1.2.3 and 256.1.1.1 and 1.2.3.4.5"),
        ("IP_ADDRESS", "build 10.0.19045.3803"),
        ("IP_ADDRESS", "upgrade to version 1.2.3.4 or release 4.2.1.0"),
        ("IP_ADDRESS", "at 12:30:45 and std::vector"),
        ("EMAIL_ADDRESS", "user@localhost and @handle and a@b"),
        ("EMAIL_ADDRESS", "postgres://app:pw!x9@db.internal:5432/prod"),
    ],
)
def test_hard_negatives(entity: str, text: str) -> None:
    assert found(text, entity) == []


def test_luhn_iban_ssn_rules() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE88370400440532013000")
    assert not iban_ok("DE89") and not iban_ok("1289370400440532013000")
    assert ssn_ok("536", "22", "1234")
    assert not any(ssn_ok(*p) for p in [("000", "12", "3456"), ("666", "12", "3456"),
                                         ("900", "12", "3456"), ("536", "00", "1234"),
                                         ("536", "22", "0000")])  # fmt: skip


def test_scores_are_one_for_checksummed_entities_only() -> None:
    text = "card 4111111111111111 iban GB82WEST12345698765432 ssn 536-22-1234 a@example.com"
    scores = {h.category: h.score for h in scan(text, ENTITIES)}
    assert scores["CREDIT_CARD"] == scores["IBAN_CODE"] == 1.0
    assert scores["US_SSN"] < 1.0 and scores["EMAIL_ADDRESS"] < 1.0


def test_only_the_asked_entities_and_no_overlaps() -> None:
    text = "mail a@example.com or call +1 415 555 0132, card 4111111111111111"
    assert [h.category for h in scan(text, ["EMAIL_ADDRESS"])] == ["EMAIL_ADDRESS"]
    assert scan(text, ["PERSON"]) == []
    hits = scan(text, ENTITIES)
    assert all(a.end <= b.start for a, b in zip(hits, hits[1:], strict=False))
    # a phone that passes Luhn as a card number stays a phone: the "+" rules the card out
    assert [h.category for h in scan("+4915112345678", ENTITIES)] == ["PHONE_NUMBER"]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32))
def test_generated_entities_are_found_and_corrupted_ones_not(seed: int) -> None:
    r = random.Random(seed)
    good_card, good_iban, good_ssn = card(r), iban(r), ssn(r)
    assert found(f"pay {good_card} now", "CREDIT_CARD") == [good_card]
    assert found(f"to {good_iban}.", "IBAN_CODE") == [good_iban]
    assert found(f"ssn {good_ssn}.", "US_SSN") == [good_ssn]
    assert found(f"pay {card(r, valid=False)} now", "CREDIT_CARD") == []
    assert found(f"to {iban(r, valid=False)}.", "IBAN_CODE") == []
    assert found(f"ssn {ssn(r, valid=False)}.", "US_SSN") == []


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32))
def test_the_generated_hard_negatives_are_not_pii(seed: int) -> None:
    r = random.Random(seed)
    for make in _negatives():
        text = f"About {make(r)}, thanks."
        assert scan(text, ENTITIES) == [], text


_PIECES = ["@", "+", "-", " ", ".", ":", "::", "4111", "1111", "DE89", "://", "\ud800",
           "\udc00", "\x00", "é", "٣", "(415)"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(), st.sampled_from(_PIECES)), max_size=40).map("".join))
def test_arbitrary_text_never_raises(text: str) -> None:
    for hit in scan(text, ENTITIES):
        assert 0 <= hit.start < hit.end <= len(text)


@pytest.mark.parametrize("chunk", ["4111 ", "1.1.1.", "a@b.", "+1 2", "DE89 ", "1:", "https://x/"])
def test_very_long_text(chunk: str) -> None:
    text = chunk * 40_000
    hits = pii_patterns.scan(text, ENTITIES)
    assert all(0 <= h.start < h.end <= len(text) for h in hits)
