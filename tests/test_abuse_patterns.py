"""TokenFence's abuse patterns (``farebox.guardrails.abuse``): prompt stuffing on padding
and not on long prose, batch bursts and not varied requests, context fill; any text is
judged without raising and at a bounded cost."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.core.guardrails import AbusePolicy
from farebox.guardrails import abuse
from farebox.guardrails.abuse import (
    BatchWatch,
    compression_ratio,
    context_hit,
    context_window_of,
    similarity,
    sketch,
    stuffing_hit,
)

ON = AbusePolicy(stuffing="block", batch="block", context="block", batch_max=5,
                 batch_window_s=60)  # fmt: skip
WORDS = (
    "the a customer order invoice refund delivery parcel account password reset card payment "
    "monthly subscription cancel upgrade plan team member invite export report chart weekly "
    "error message login browser mobile app notification email address shipping warehouse "
    "return label discount code coupon tax receipt currency euro dollar pound balance credit "
    "debit transfer bank branch opening hours weekend holiday support ticket agent manager "
    "escalate complaint review rating product size colour stock available tomorrow yesterday "
    "morning evening because however although when where which while after before during"
).split()


def prose(seed: int, chars: int) -> str:
    """Seeded sentences of ordinary vocabulary: varied text, as a user writes it."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < chars:
        words = rng.choices(WORDS, k=rng.randint(6, 18))
        sentence = " ".join(words).capitalize() + rng.choice([".", "?", "!"]) + " "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:chars]


def real_conversations() -> str:
    """Real, long support conversations (the ``fow-cache`` package's data), one text."""
    fow = pytest.importorskip("fow_cache")
    path = Path(fow.__file__).parent / "data" / "conv-long" / "billing.jsonl"
    texts = []
    for line in path.read_text().splitlines():
        for turn in json.loads(line)["a"]:
            texts.append(str(turn["content"]))
    return "\n".join(texts)


# prompt stuffing -------------------------------------------------------------------------
def test_padding_is_stuffing() -> None:
    padding = "Please answer in great detail and be thorough. " * 300
    hit = stuffing_hit("Summarise this: " + padding, ON)
    assert hit is not None
    assert (hit.detector, hit.category) == ("abuse", "prompt_stuffing")
    assert hit.score == 1.0  # far beyond twice the ratio


def test_long_prose_is_not_stuffing() -> None:
    for seed in range(5):
        text = prose(seed, 20_000)
        assert compression_ratio(text) < 5.0
        assert stuffing_hit(text, ON) is None


def test_real_long_conversations_are_not_stuffing() -> None:
    text = real_conversations()
    assert len(text) > ON.stuffing_min_chars
    assert stuffing_hit(text, ON) is None
    assert stuffing_hit(text[:3000], ON) is None


def test_short_texts_are_never_judged() -> None:
    assert stuffing_hit("a" * 1999, ON) is None  # min 2000 characters
    assert stuffing_hit("a" * 2000, ON) is not None


def test_padding_in_the_middle_of_a_huge_prompt_is_found() -> None:
    text = prose(1, 300_000) + "ignore this filler " * 200_000 + prose(2, 300_000)
    assert len(text) > 4_000_000
    assert stuffing_hit(text, ON) is not None


def test_ratio_threshold_and_score_follow_the_plan() -> None:
    text = "0123456789abcdef" * 300  # very repetitive
    loose = AbusePolicy(stuffing="flag", stuffing_ratio=10_000.0)
    assert stuffing_hit(text, loose) is None
    hit = stuffing_hit(text, AbusePolicy(stuffing="flag", stuffing_ratio=4.0))
    assert hit is not None and 0.5 <= hit.score <= 1.0


# context exploitation --------------------------------------------------------------------
def test_context_fill() -> None:
    assert context_hit(900, 1000, ON) is not None  # 90 % of the window
    hit = context_hit(1000, 1000, ON)
    assert hit is not None and (hit.category, hit.score) == ("context_exploitation", 1.0)
    assert context_hit(899, 1000, ON) is None
    assert context_hit(10**9, None, ON) is None  # no window known: no check
    assert context_hit(5, 0, ON) is None
    half = AbusePolicy(context="flag", context_max_fraction=0.5)
    assert context_hit(500, 1000, half) is not None


def test_context_window_of_an_alias_is_its_smallest() -> None:
    assert context_window_of([128_000, None, 32_000]) == 32_000
    assert context_window_of([None, None]) is None
    assert context_window_of([]) is None


# batch abuse -----------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_burst_of_near_identical_requests_is_batch_abuse() -> None:
    clock = Clock()
    watch = BatchWatch(clock)
    template = "Write a product description for item number {n} in our spring catalogue, "
    template += "friendly tone, two paragraphs, mention free shipping and easy returns."
    hits = []
    for n in range(8):
        clock.now += 1
        hits.append(watch.hit("acme", "u1", template.format(n=n * 7919), ON))
    assert [h is not None for h in hits] == [False] * 5 + [True] * 3  # batch_max 5
    assert hits[-1] is not None and hits[-1].category == "batch_abuse"


def test_varied_requests_are_not_batch_abuse() -> None:
    clock = Clock()
    watch = BatchWatch(clock)
    for seed in range(40):
        clock.now += 0.5
        assert watch.hit("acme", "u1", prose(seed, 400), ON) is None


def test_bursts_are_per_user_and_per_window() -> None:
    clock = Clock()
    watch = BatchWatch(clock)
    text = "translate the attached paragraph into german and keep the formatting"
    for _ in range(5):
        assert watch.hit("acme", "u1", text, ON) is None
        assert watch.hit("acme", "u2", text, ON) is None  # another user: own count
        assert watch.hit("other", "u1", text, ON) is None  # another tenant's user
    assert watch.hit("acme", "u1", text, ON) is not None  # the sixth within a minute
    clock.now += 61  # the window has passed
    assert watch.hit("acme", "u1", text, ON) is None


def test_near_identical_means_similar_shingles() -> None:
    a = sketch(prose(3, 2000))
    b = sketch(prose(3, 2000).replace("refund", "refunds", 1))
    c = sketch(prose(4, 2000))
    assert similarity(a, b) >= abuse.SIMILAR
    assert similarity(a, c) < 0.2
    assert sketch("Order 123 please") == sketch("order 987   PLEASE")  # digits, case, spaces


def test_memory_is_bounded() -> None:
    clock = Clock()
    watch = BatchWatch(clock, users=100)
    for i in range(1000):
        watch.hit("t", f"user{i}", f"hello {i}", ON)
    assert len(watch) == 100
    for i in range(abuse.CLUSTERS * 3):  # one user, ever new texts: clusters capped
        watch.hit("t", "one", prose(i, 300), ON)
    clusters = watch._users[("t", "one")]
    assert len(clusters) == abuse.CLUSTERS
    flood = "same text every time, over and over again"
    for _ in range(1000):
        watch.hit("t", "flood", flood, ON)
    assert max(len(c.times) for c in watch._users[("t", "flood")]) == ON.batch_max + 1


# bad input: never raises, bounded cost ---------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(), max_size=5000), st.integers(0, 10**7))
def test_any_text_never_raises(text: str, tokens: int) -> None:
    policy = AbusePolicy(stuffing="flag", stuffing_min_chars=1, batch="flag", context="flag")
    hit = stuffing_hit(text, policy)
    assert hit is None or 0.0 <= hit.score <= 1.0
    watch = BatchWatch(Clock())
    assert watch.hit("t", "u", text, policy) is None  # the first request is never a burst
    found = context_hit(tokens, 4096, policy)
    assert found is None or 0.0 <= found.score <= 1.0


def test_invalid_unicode_is_judged() -> None:
    text = "\ud800 lone surrogate \udfff " * 500
    assert stuffing_hit(text, ON) is not None
    assert BatchWatch(Clock()).hit("t", "u", text, ON) is None


def test_cost_is_bounded_on_4_mb() -> None:
    rng = random.Random(7)
    huge = "".join(rng.choice("abcdefgh ijklmnop\n") for _ in range(4 * 1024 * 1024))
    watch = BatchWatch(Clock())
    started = time.perf_counter()
    for _ in range(5):
        stuffing_hit(huge, ON)
        watch.hit("t", "u", huge, ON)
    per_request = (time.perf_counter() - started) / 5
    assert per_request < 0.05  # measured ~6 ms: a sample and a capped fingerprint


def test_a_deployments_context_window_reaches_its_routing_target(tmp_path: Path) -> None:
    from farebox.catalog import load_catalog
    from farebox.config.settings import parse_settings
    from farebox.gateway.routing_table import build_router

    data = {
        "database": f"sqlite:///{tmp_path / 'f.db'}",
        "providers": {"sim": {"kind": "mock"}},
        "models": {
            "cheap": [
                {"provider": "sim", "model": "gpt-4o-mini", "context_window": 8192},
                {"provider": "sim", "model": "gpt-4o"},
            ]
        },  # fmt: skip
    }
    settings = parse_settings(data, source="t.yaml", env={"FAREBOX_ADMIN_KEY": "x" * 40},
                              base_dir=tmp_path)  # fmt: skip
    targets = build_router(settings, load_catalog()).resolve("cheap")
    assert targets is not None
    assert [t.context_window for t in targets] == [8192, None]
    window = context_window_of([t.context_window for t in targets])
    assert window == 8192
    assert context_hit(7400, window, ON) is not None  # 90 % of 8192 is 7372.8
    assert context_hit(7372, window, ON) is None
