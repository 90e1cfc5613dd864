"""Money is exact: property tests for amounts, prices and cost, and the ledger property
(the sum of the entries is the reported usage, to the pico-dollar)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.catalog import load_catalog
from farebox.core.money import (
    PICO_PER_USD,
    MoneyFormatError,
    decimal_ratio,
    format_usd,
    mul_ratio,
    parse_usd,
    price_per_token,
)
from farebox.core.pricing import cost
from farebox.core.usage import Usage, from_anthropic, from_openai

CATALOG = load_catalog()
RAW = json.loads(
    resources.files("farebox.catalog").joinpath("prices.json").read_text(encoding="utf-8")
)["models"]
OPENAI_MODELS = sorted(m for m, v in RAW.items() if v["provider"] == "openai")
ANTHROPIC_MODELS = sorted(m for m, v in RAW.items() if v["provider"] == "anthropic")
# Anthropic's standard multipliers hold for these (Claude 3 Haiku predates them)
MULTIPLIER_MODELS = [m for m in ANTHROPIC_MODELS if m != "claude-3-haiku-20240307"]
PER_MILLION_TO_PICO = Fraction(PICO_PER_USD, 10**6)

# up to a thousand trillion dollars, to the pico-dollar
picos = st.integers(min_value=-(10**27), max_value=10**27)
tokens = st.integers(min_value=0, max_value=10**9)


def usd(text: str) -> Fraction:
    return Fraction(Decimal(text))


# --- amounts ----------------------------------------------------------------------------


@given(picos)
def test_format_parse_round_trip(pico: int) -> None:
    text = format_usd(pico)
    assert parse_usd(text) == pico
    assert usd(text) == Fraction(pico, PICO_PER_USD)
    whole, _, frac = text.lstrip("-").partition(".")
    assert whole.isdigit() and frac.isdigit()
    assert len(frac) >= 2 and len(frac) <= 12
    assert len(frac) == 2 or not frac.endswith("0")
    assert "e" not in text.lower()


@given(picos, st.integers(min_value=0, max_value=8))
def test_parse_accepts_any_exact_spelling(pico: int, zeros: int) -> None:
    sign = "-" if pico < 0 else ""
    whole, frac = divmod(abs(pico), PICO_PER_USD)
    text = f"{sign}{whole}.{frac:012d}" + "0" * zeros
    assert parse_usd(text) == pico
    assert parse_usd(f"  {text}\n") == pico
    if frac == 0:
        assert parse_usd(f"{sign}{whole}") == pico


@given(st.integers(min_value=1, max_value=10**20), st.integers(min_value=1, max_value=9))
def test_parse_rejects_sub_pico_amounts(value: int, digit: int) -> None:
    text = f"{value // PICO_PER_USD}.{value % PICO_PER_USD:012d}{digit}"
    with pytest.raises(MoneyFormatError):
        parse_usd(text)


@pytest.mark.parametrize(
    "text",
    [
        "1" + "0" * 27 + "1",  # 29 significant digits
        "9" * 40,
        "123456789012345678901234567890.123456789012",
        "-" + "9" * 30 + ".999999999999",
    ],
)
def test_parse_never_rounds_large_amounts(text: str) -> None:
    """An amount is read exactly or refused; it is never silently rounded."""
    try:
        value = parse_usd(text)
    except MoneyFormatError:
        return
    assert Fraction(value, PICO_PER_USD) == usd(text)


@pytest.mark.parametrize("text", ["1e999999", "-1e999999", "1e-999999"])
def test_parse_extreme_exponents_are_format_errors(text: str) -> None:
    with pytest.raises(MoneyFormatError):
        parse_usd(text)


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "NaN", "inf", "-Infinity", "0x10", "1,5"])
def test_parse_rejects_non_numbers(bad: str) -> None:
    with pytest.raises(MoneyFormatError):
        parse_usd(bad)


@pytest.mark.parametrize("bad", [0.5, 1e-3, True, None, [1], Decimal("1")])
def test_parse_rejects_non_strings(bad: Any) -> None:
    with pytest.raises(MoneyFormatError):
        parse_usd(bad)


def test_known_amounts() -> None:
    assert parse_usd("0.50") == 500_000_000_000
    assert parse_usd(3) == 3 * PICO_PER_USD
    assert format_usd(0) == "0.00"
    assert format_usd(1) == "0.000000000001"
    assert format_usd(-1) == "-0.000000000001"
    assert format_usd(150_000) == "0.00000015"
    assert format_usd(10 * PICO_PER_USD) == "10.00"
    assert format_usd(12_340_000_000_000) == "12.34"


# --- prices ------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=0, max_value=6))
def test_price_per_token_exact(micro: int, places: int) -> None:
    """Any price with at most six decimals is an exact integer of pico-USD per token."""
    value = Fraction(micro, 10**places)
    text = f"{micro // 10**places}.{micro % 10**places:0{places}d}" if places else str(micro)
    per_token = price_per_token(text)
    assert per_token == value * PER_MILLION_TO_PICO
    assert Fraction(per_token).denominator == 1


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=7, max_value=12))
def test_price_per_token_rejects_more_than_six_decimals(value: int, places: int) -> None:
    if value % 10 == 0:
        value += 1  # the last decimal is significant
    text = f"{value // 10**places}.{value % 10**places:0{places}d}"
    with pytest.raises(MoneyFormatError):
        price_per_token(text)


@pytest.mark.parametrize("bad", ["-1", "-0.15", "0.0000001", "abc", "1e-7", ""])
def test_price_per_token_rejects(bad: str) -> None:
    with pytest.raises(MoneyFormatError):
        price_per_token(bad)


def test_catalog_prices_match_the_shipped_strings() -> None:
    for name, raw in RAW.items():
        price = CATALOG.get(name)
        assert price is not None, name
        assert price.input == usd(raw["input"]) * PER_MILLION_TO_PICO, name
        assert price.output == usd(raw.get("output", "0")) * PER_MILLION_TO_PICO, name
        if "cached_input" in raw:
            assert price.cached_input == usd(raw["cached_input"]) * PER_MILLION_TO_PICO, name


# --- cost ----------------------------------------------------------------------------------


def openai_hand_cost(model: str, prompt: int, cached: int, completion: int) -> Fraction:
    raw = RAW[model]
    rate_in, rate_out = usd(raw["input"]), usd(raw.get("output", "0"))
    rate_cached = usd(raw.get("cached_input", raw["input"]))
    usd_per_million = (prompt - cached) * rate_in + cached * rate_cached + completion * rate_out
    return usd_per_million * PER_MILLION_TO_PICO


@given(
    st.sampled_from(OPENAI_MODELS),
    tokens,
    st.floats(min_value=0, max_value=1),
    tokens,
    st.floats(min_value=0, max_value=1),
)
def test_openai_cost_is_the_hand_formula(
    model: str, prompt: int, cached_share: float, completion: int, reasoning_share: float
) -> None:
    cached = int(prompt * cached_share)
    reasoning = int(completion * reasoning_share)
    usage = from_openai(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )
    expected = openai_hand_cost(model, prompt, cached, completion)
    assert expected.denominator == 1
    got = cost(usage, CATALOG.prices[model])
    assert type(got) is int
    assert got == expected


def anthropic_usage(inp: int, w5: int, w1: int, read: int, out: int) -> Usage:
    return from_anthropic(
        {
            "input_tokens": inp,
            "cache_creation_input_tokens": w5 + w1,
            "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
            "cache_read_input_tokens": read,
            "output_tokens": out,
        }
    )


@given(st.sampled_from(MULTIPLIER_MODELS), tokens, tokens, tokens, tokens, tokens)
def test_anthropic_cost_is_the_hand_formula(
    model: str, inp: int, w5: int, w1: int, read: int, out: int
) -> None:
    raw = RAW[model]
    rate_in, rate_out = usd(raw["input"]), usd(raw["output"])
    usd_per_million = (
        inp * rate_in
        + w5 * rate_in * Fraction(5, 4)
        + w1 * rate_in * 2
        + read * rate_in * Fraction(1, 10)
        + out * rate_out
    )
    expected = usd_per_million * PER_MILLION_TO_PICO
    assert expected.denominator == 1
    usage = anthropic_usage(inp, w5, w1, read, out)
    assert usage.input_tokens == inp + w5 + w1 + read
    assert cost(usage, CATALOG.prices[model]) == expected


@given(st.sampled_from(ANTHROPIC_MODELS), tokens, tokens, tokens, tokens, tokens)
def test_anthropic_cost_uses_the_catalog_rates(
    model: str, inp: int, w5: int, w1: int, read: int, out: int
) -> None:
    raw = RAW[model]
    usd_per_million = (
        inp * usd(raw["input"])
        + w5 * usd(raw["cache_write_5m"])
        + w1 * usd(raw["cache_write_1h"])
        + read * usd(raw["cached_input"])
        + out * usd(raw["output"])
    )
    usage = anthropic_usage(inp, w5, w1, read, out)
    assert cost(usage, CATALOG.prices[model]) == usd_per_million * PER_MILLION_TO_PICO


@given(tokens, tokens, tokens)
def test_anthropic_cache_write_without_split_is_five_minute(
    inp: int, written: int, out: int
) -> None:
    usage = from_anthropic(
        {"input_tokens": inp, "cache_creation_input_tokens": written, "output_tokens": out}
    )
    assert usage.cache_write_5m_tokens == written and usage.cache_write_1h_tokens == 0
    price = CATALOG.prices["claude-sonnet-4-5"]
    assert (
        cost(usage, price)
        == inp * price.input + written * price.cache_write_5m + out * price.output
    )


@given(st.sampled_from(sorted(CATALOG.prices)), tokens, tokens, tokens)
def test_cost_is_additive(model: str, a: int, b: int, out: int) -> None:
    price = CATALOG.prices[model]
    one = cost(Usage(input_tokens=a, output_tokens=out), price)
    two = cost(Usage(input_tokens=b), price)
    assert cost(Usage(input_tokens=a + b, output_tokens=out), price) == one + two
    assert cost(Usage(), price) == 0


# --- ratios ------------------------------------------------------------------------------


def half_away_from_zero(value: Fraction) -> int:
    magnitude = int(abs(value) + Fraction(1, 2))  # floor(|v| + 1/2)
    return magnitude if value >= 0 else -magnitude


@given(
    st.integers(min_value=-(10**24), max_value=10**24),
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=1, max_value=10**9),
)
def test_mul_ratio_rounds_half_away_from_zero(pico: int, num: int, den: int) -> None:
    got = mul_ratio(pico, num, den)
    assert got == half_away_from_zero(Fraction(pico * num, den))
    assert abs(Fraction(got) - Fraction(pico * num, den)) <= Fraction(1, 2)


@pytest.mark.parametrize(
    ("pico", "num", "den", "expected"),
    [
        (5, 1, 2, 3),
        (-5, 1, 2, -3),
        (4, 1, 3, 1),
        (5, 1, 3, 2),
        (-4, 1, 3, -1),
        (7, 5, 4, 9),  # 8.75
        (100, 5, 4, 125),
        (0, 3, 7, 0),
        (1, 1, 2, 1),
        (-1, 1, 2, -1),
    ],
)
def test_mul_ratio_examples(pico: int, num: int, den: int, expected: int) -> None:
    assert mul_ratio(pico, num, den) == expected


@pytest.mark.parametrize("den", [0, -1])
def test_mul_ratio_rejects_bad_denominator(den: int) -> None:
    with pytest.raises(ValueError):
        mul_ratio(10, 1, den)


@given(st.decimals(min_value=0, max_value=10**6, allow_nan=False, allow_infinity=False, places=8))
def test_decimal_ratio_is_exact(value: Decimal) -> None:
    num, den = decimal_ratio(str(value))
    assert Fraction(num, den) == Fraction(value)


@pytest.mark.parametrize("bad", ["-1", "abc", "NaN", "inf"])
def test_decimal_ratio_rejects(bad: str) -> None:
    with pytest.raises(MoneyFormatError):
        decimal_ratio(bad)


# --- the ledger property ----------------------------------------------------------------

CHAT_MODELS = ["gpt-4o-mini", "gpt-4o", "o4-mini", "claude-sonnet-4-5"]
EMBED_MODEL = "text-embedding-3-small"
TENANTS = ["t-alpha", "t-beta", "t-gamma", "t-delta", "t-eps"]
REQUESTS = 2000
BATCH = 100


def random_request(rng: random.Random) -> dict[str, Any]:
    model = rng.choice([*CHAT_MODELS, EMBED_MODEL])
    words = "invoice tenant budget stream token ledger price cache".split()
    if model == EMBED_MODEL:
        texts = [
            " ".join(rng.choices(words, k=rng.randint(1, 400))) for _ in range(rng.randint(1, 3))
        ]
        return {
            "path": "/v1/embeddings",
            "body": {"model": model, "input": texts if len(texts) > 1 else texts[0]},
        }
    # long prompts make the mock report cached prompt tokens
    size = rng.choice([3, 30, 1200])
    messages = [{"role": "system", "content": "Be brief."}]
    messages.append({"role": "user", "content": " ".join(rng.choices(words, k=size))})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if rng.random() < 0.3:
        body["max_tokens"] = rng.randint(1, 200)
    if rng.random() < 0.4:
        body["stream"] = True
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
    return {"path": "/v1/chat/completions", "body": body}


def sse_events(text: str) -> list[Any]:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


def hand_cost(e: Any) -> Fraction:
    raw = RAW[e.model_served]
    rate_cached = usd(raw.get("cached_input", raw["input"]))
    uncached = e.input_tokens - e.cached_input_tokens
    usd_per_million = (
        uncached * usd(raw["input"])
        + e.cached_input_tokens * rate_cached
        + e.output_tokens * usd(raw.get("output", "0"))
    )
    return usd_per_million * PER_MILLION_TO_PICO


async def test_ledger_sums_equal_reported_usage_exactly(make_gateway: Any) -> None:
    rng = random.Random(20240607)
    config = {"plans": {"pro": {"pricing": {"markup": "1.25"}}}}
    pro = set(TENANTS[::2])
    async with make_gateway(config) as gw:
        keys = {t: await gw.tenant_key(t, "pro" if t in pro else "default") for t in TENANTS}
        plan = [(rng.choice(TENANTS), random_request(rng)) for _ in range(REQUESTS)]

        async def send(tenant: str, req: dict[str, Any]) -> dict[str, Any]:
            r = await gw.client.post(
                req["path"], json=req["body"], headers={"Authorization": f"Bearer {keys[tenant]}"}
            )
            assert r.status_code == 200, r.text
            out = {"tenant": tenant, "body": req["body"], "headers": r.headers}
            if req["body"].get("stream"):
                out["events"] = sse_events(r.text)
            else:
                out["json"] = r.json()
            return out

        results: list[dict[str, Any]] = []
        for i in range(0, REQUESTS, BATCH):
            results += await asyncio.gather(*(send(t, q) for t, q in plan[i : i + BATCH]))

        entries = await gw.ledger()
        by_id = {e.request_id: e for e in entries}
        assert len(entries) == REQUESTS == len(by_id)
        assert {e.status for e in entries} == {"ok"}

        # each entry's cost is its usage at the catalog price, exactly
        saw_cached = saw_reasoning = saw_stream = 0
        for e in entries:
            usage = Usage(
                input_tokens=e.input_tokens, cached_input_tokens=e.cached_input_tokens,
                cache_write_5m_tokens=e.cache_write_5m_tokens,
                cache_write_1h_tokens=e.cache_write_1h_tokens,
                output_tokens=e.output_tokens, reasoning_tokens=e.reasoning_tokens,
            )  # fmt: skip
            assert type(e.cost) is int
            assert e.cost == cost(usage, CATALOG.prices[e.model_served])
            assert e.cost == hand_cost(e)
            if e.tenant_id in pro:
                assert e.revenue == mul_ratio(e.cost, 5, 4)
                assert e.revenue == half_away_from_zero(Fraction(e.cost) * Fraction("1.25"))
            else:
                assert e.revenue == e.cost  # the default plan resells at cost
            saw_cached += e.cached_input_tokens > 0
            saw_reasoning += e.reasoning_tokens > 0
            saw_stream += e.stream
        assert saw_cached and saw_reasoning and saw_stream  # the mix really was mixed

        # each response agrees with its entry
        per_tenant_cost: dict[str, int] = defaultdict(int)
        for res in results:
            e = by_id[res["headers"]["x-farebox-request-id"]]
            assert e.tenant_id == res["tenant"]
            assert e.model_requested == res["body"]["model"]
            per_tenant_cost[e.tenant_id] += e.cost
            if "json" in res:
                assert res["headers"]["x-farebox-cost-usd"] == format_usd(e.cost)
                assert parse_usd(res["headers"]["x-farebox-cost-usd"]) == e.cost
                assert res["headers"]["x-farebox-model"] == e.model_served
                assert res["json"]["usage"]["prompt_tokens"] == e.input_tokens
                if e.endpoint == "chat.completions":
                    assert res["json"]["usage"]["completion_tokens"] == e.output_tokens
            else:
                events = res["events"]
                assert events[-1] == "[DONE]"
                assert e.stream
                usage_chunks = [ev for ev in events[:-1] if ev.get("usage")]
                if (res["body"].get("stream_options") or {}).get("include_usage"):
                    (final,) = usage_chunks
                    assert final["usage"]["farebox_cost_usd"] == format_usd(e.cost)
                    assert final["usage"]["prompt_tokens"] == e.input_tokens
                    assert final["usage"]["completion_tokens"] == e.output_tokens
                else:
                    assert usage_chunks == []

        total = sum(e.cost for e in entries)
        assert total == sum(per_tenant_cost.values())

        async def usage(query: str) -> list[dict[str, Any]]:
            r = await gw.client.get(f"/admin/v1/usage{query}", headers=gw.admin)
            assert r.status_code == 200, r.text
            return list(r.json()["data"])

        (overall,) = await usage("")
        assert parse_usd(overall["cost_usd"]) == total
        assert parse_usd(overall["revenue_usd"]) == sum(e.revenue for e in entries)
        assert overall["requests"] == REQUESTS
        assert overall["input_tokens"] == sum(e.input_tokens for e in entries)
        assert overall["output_tokens"] == sum(e.output_tokens for e in entries)

        rows = await usage("?group_by=tenant")
        assert {r["tenant"]: parse_usd(r["cost_usd"]) for r in rows} == dict(per_tenant_cost)
        for r in rows:
            revenue = sum(e.revenue for e in entries if e.tenant_id == r["tenant"])
            assert parse_usd(r["revenue_usd"]) == revenue
            assert r["requests"] == sum(1 for e in entries if e.tenant_id == r["tenant"])
        for tenant in TENANTS:
            (row,) = await usage(f"?tenant={tenant}")
            assert parse_usd(row["cost_usd"]) == per_tenant_cost[tenant]
            assert parse_usd(row["cost_usd"]) == sum(e.cost for e in await gw.ledger(tenant))

        rows = await usage("?group_by=model")
        assert sum(parse_usd(r["cost_usd"]) for r in rows) == total
        per_model: dict[str, int] = defaultdict(int)
        for e in entries:
            per_model[e.model_served] += e.cost
        assert {r["model"]: parse_usd(r["cost_usd"]) for r in rows} == dict(per_model)
