"""The cache's pure parts: keys (what changes a key and what does not), partitions in every key,
the hit price and the exact split of a batch's money (property tests)."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from farebox.core.cache import (
    HIT_STATUS,
    MISS,
    CacheTally,
    HitPrice,
    Partition,
    embedding_keys,
    exact_key,
    last_user_text,
    semantic_context,
    split_evenly,
    tally_entries,
)
from farebox.core.records import LedgerEntry

BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "temperature": 0.2,
    "tools": [{"type": "function", "function": {"name": "calc", "parameters": {}}}],
    "response_format": {"type": "text"},
}
P = Partition("t1")
texts = st.text(max_size=20)


def mutations() -> st.SearchStrategy[tuple[str, Any]]:
    """A change to a field that changes the answer: (path, new value)."""
    return st.one_of(
        st.tuples(st.just("system"), texts.filter(lambda t: t != "You are terse.")),
        st.tuples(st.just("earlier"), texts.filter(lambda t: t != "What is 2+2?")),
        st.tuples(st.just("last"), texts.filter(lambda t: t != "And 3+3?")),
        st.tuples(st.just("temperature"), st.floats(0, 2).filter(lambda t: t != 0.2)),
        st.tuples(st.just("tool"), texts.filter(lambda t: t != "calc")),
        st.tuples(st.just("response_format"), st.sampled_from(["json_object", "json_schema"])),
        st.tuples(st.just("max_tokens"), st.integers(1, 10_000)),
        st.tuples(st.just("model"), texts.filter(lambda t: t != "gpt-4o-mini")),
    )


def mutate(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    if path == "system":
        out["messages"][0]["content"] = value
    elif path == "earlier":
        out["messages"][1]["content"] = value
    elif path == "last":
        out["messages"][-1]["content"] = value
    elif path == "tool":
        out["tools"][0]["function"]["name"] = value
    elif path == "response_format":
        out["response_format"] = {"type": value}
    else:
        out[path] = value
    return out


@given(mutations())
def test_any_change_to_the_answer_changes_the_key(change: tuple[str, Any]) -> None:
    assert exact_key(P, "openai", mutate(BODY, *change)) != exact_key(P, "openai", BODY)


@given(
    user=st.one_of(st.none(), texts),
    stream=st.booleans(),
    options=st.one_of(st.none(), st.just({"include_usage": True})),
)
def test_fields_that_do_not_change_the_answer_keep_the_key(
    user: str | None, stream: bool, options: dict[str, Any] | None
) -> None:
    changed = dict(BODY, stream=stream, user=user, stream_options=options, metadata={"a": "b"})
    assert exact_key(P, "openai", changed) == exact_key(P, "openai", BODY)


@given(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8), st.text(max_size=8))
def test_the_partition_is_in_every_key(t1: str, n1: str, t2: str, n2: str) -> None:
    same = (t1, n1) == (t2, n2)
    a, b = Partition(t1, n1), Partition(t2, n2)
    assert (exact_key(a, "openai", BODY) == exact_key(b, "openai", BODY)) == same
    assert (semantic_context(a, "openai", BODY) == semantic_context(b, "openai", BODY)) == same
    body = {"model": "e", "input": ["x", "y"]}
    assert (embedding_keys(a, body) == embedding_keys(b, body)) == same


def test_the_key_does_not_mix_fields_and_values() -> None:
    # a tenant named like a namespace boundary cannot collide with another partition
    assert exact_key(Partition("a", "b:c"), "s", BODY) != exact_key(
        Partition("a:b", "c"), "s", BODY
    )
    assert exact_key(P, "openai", BODY) != exact_key(P, "anthropic", BODY)


def test_semantic_context_ignores_only_the_last_user_message() -> None:
    other_last = mutate(BODY, "last", "And 4+4?")
    assert semantic_context(P, "openai", other_last) == semantic_context(P, "openai", BODY)
    for path, value in [("system", "x"), ("earlier", "y"), ("temperature", 1.0), ("tool", "z")]:
        changed = mutate(BODY, path, value)
        assert semantic_context(P, "openai", changed) != semantic_context(P, "openai", BODY)
    assert last_user_text(BODY) == "And 3+3?"
    parts = dict(BODY, messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert last_user_text(parts) == "hi"
    image = {"type": "image_url", "image_url": {"url": "data:"}}
    mixed = dict(BODY, messages=[{"role": "user", "content": [image]}])
    assert last_user_text(mixed) is None and semantic_context(P, "openai", mixed) is None
    tool_last = dict(BODY, messages=[*BODY["messages"], {"role": "tool", "content": "4"}])
    assert last_user_text(tool_last) is None


def test_embedding_keys_are_per_item_and_depend_on_the_model() -> None:
    body = {"model": "e", "input": ["a", "b", "a"]}
    keys = embedding_keys(P, body)
    assert keys is not None and keys[0] == keys[2] != keys[1]
    assert embedding_keys(P, {"model": "e", "input": "a"}) == keys[:1]
    assert embedding_keys(P, {"model": "f", "input": "a"}) != keys[:1]
    assert embedding_keys(P, {"model": "e", "input": "a", "dimensions": 8}) != keys[:1]
    assert embedding_keys(P, {"model": "e", "input": 3}) is None


@given(st.integers(0, 2**63), st.integers(0, 10**6), st.integers(1, 10**6))
def test_hit_price_is_the_exact_share_rounded_half_up(original: int, num: int, den: int) -> None:
    share = Fraction(original * num, den)
    got = HitPrice(num, den).revenue(original)
    assert share - Fraction(1, 2) < got <= share + Fraction(1, 2)
    assert HitPrice(0, 1).revenue(original) == 0 and HitPrice(1, 1).revenue(original) == original


@given(st.integers(0, 2**63), st.lists(st.integers(0, 10**6), min_size=1, max_size=50))
def test_split_evenly_sums_exactly_and_follows_the_weights(total: int, weights: list[int]) -> None:
    parts = split_evenly(total, weights)
    assert sum(parts) == total and len(parts) == len(weights) and min(parts) >= 0
    whole = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, whole) if whole else Fraction(total, len(weights))
        assert abs(part - exact) < 1


def _entry(tenant: str, status: str, cache: str | None, saved: int, at: float) -> LedgerEntry:
    return LedgerEntry("r", tenant, "k", "chat.completions", "m", "m", "p", status, 200, at, at,
                       cache=cache, saved=saved)  # fmt: skip


def test_tally_counts_hits_misses_and_saved_in_the_window() -> None:
    entries = [
        _entry("a", HIT_STATUS, "hit-exact", 5, 10.0),
        _entry("a", HIT_STATUS, "hit-semantic", 7, 11.0),
        _entry("a", "ok", MISS, 0, 12.0),
        _entry("a", "ok", "bypass", 0, 12.0),
        _entry("b", "ok", None, 0, 12.0),
        _entry("a", HIT_STATUS, "hit-exact", 100, 50.0),
    ]
    assert tally_entries(entries, None, 0.0, 20.0) == [CacheTally("a", 2, 1, 12)]
    assert tally_entries(entries, "b", None, None) == []
    assert CacheTally("a", 2, 1, 12).hit_rate == (2, 3)
