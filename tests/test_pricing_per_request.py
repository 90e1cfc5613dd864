"""Issue [13] (first part): the ``per_request`` pricing model. A served request earns the price
for its feature, else its model alias, else the plan's price, plus the optional per-token part,
exactly; a request that failed earns only the tokens it used; a plan names one pricing model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.config.settings import parse_settings
from farebox.core.money import parse_usd
from farebox.core.plans import RequestPrice, RevenueRule
from farebox.core.pricing import Price, cost
from farebox.core.usage import Usage
from farebox.errors import ConfigError
from farebox.gateway.routing_table import build_plans
from tests.cache_gateway import CountingMock, ask, config, post

pico = st.integers(0, 10**15)
names = st.sampled_from(["a", "b", "c", None])


@given(
    default=pico,
    by_model=st.dictionaries(st.sampled_from(["a", "b"]), pico, max_size=2),
    by_feature=st.dictionaries(st.sampled_from(["a", "c"]), pico, max_size=2),
    token_price=st.one_of(st.none(), st.tuples(pico, pico)),
    tokens=st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)),
    model=names,
    feature=names,
    served=st.booleans(),
)
def test_revenue_is_the_fee_for_the_feature_or_model_plus_the_tokens(
    default: int, by_model: dict[str, int], by_feature: dict[str, int],
    token_price: tuple[int, int] | None, tokens: tuple[int, int], model: str | None,
    feature: str | None, served: bool,
) -> None:  # fmt: skip
    price = None
    if token_price is not None:
        i, o = token_price
        price = Price(input=i, output=o, cached_input=i, cache_write_5m=i, cache_write_1h=i)
    rule = RevenueRule(per_request=RequestPrice(default, tuple(by_model.items()),
                                                tuple(by_feature.items()), price))  # fmt: skip
    usage = Usage(input_tokens=tokens[0], output_tokens=tokens[1])
    if feature in by_feature:
        fee = by_feature[feature]
    elif model in by_model:
        fee = by_model[model]
    else:
        fee = default
    used = cost(usage, price) if price is not None else 0
    assert rule.revenue(usage, 12345, model, feature, served) == used + (fee if served else 0)


def _settings(tmp_path: Path, pricing: Any) -> Any:
    data = {"database": f"sqlite:///{tmp_path / 'f.db'}",
            "plans": {"docs": {"models": ["*"], "pricing": pricing}}}  # fmt: skip
    return parse_settings(data, source="farebox.yaml", env={}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("pricing", "named"),
    [
        ({"markup": "2", "per_request": {"price": "0.02"}}, "plans.docs.pricing"),
        ({"resale": {"input": "1"}, "per_request": {}}, "plans.docs.pricing"),
        ({"per_request": {"price": "-1"}}, "plans.docs.pricing.per_request.price"),
        ({"per_request": {"price": "0.0000000000001"}}, "plans.docs.pricing.per_request.price"),
        ({"per_request": {"models": {"x": "abc"}}}, "plans.docs.pricing.per_request.models.x"),
        ({"per_request": {"tokens": {"input": "x"}}}, "plans.docs.pricing.per_request.tokens"),
        ({"per_request": {"each": "1"}}, "plans.docs.pricing.per_request.each"),
    ],
)
def test_bad_per_request_pricing_is_a_start_up_error_naming_it(
    tmp_path: Path, pricing: Any, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, pricing)
    assert named in str(caught.value)


def test_a_plans_per_request_pricing_becomes_its_rule(tmp_path: Path) -> None:
    prices = {"price": "0.02", "models": {"gpt-4o": "0.05"}, "features": {"analysis": "0.1"}}
    pricing = {"per_request": {**prices, "tokens": {"input": "0.5"}}}
    rule = build_plans(_settings(tmp_path, pricing))["docs"].revenue
    assert rule.per_request is not None
    assert rule.per_request.fee("gpt-4o", None) == parse_usd("0.05")
    assert rule.per_request.fee("gpt-4o", "analysis") == parse_usd("0.1")
    assert rule.per_request.fee("other", None) == parse_usd("0.02")


async def test_the_ledger_earns_the_price_per_served_request(make_gateway: Any) -> None:
    plans = {"docs": {"models": ["*"], "pricing": {"per_request": {
        "price": "0.02", "features": {"analysis": "0.10"}, "tokens": {"input": "1", "output": "2"},
    }}}}  # fmt: skip
    mock = CountingMock()
    async with make_gateway(config(plans), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="docs")
        assert (await post(gw, key, ask("one"))).status_code == 200
        r = await post(gw, key, ask("two"), **{"X-Farebox-Feature": "analysis"})
        assert r.status_code == 200
        plain, analysed = await gw.ledger("acme")
        for entry, fee in ((plain, "0.02"), (analysed, "0.10")):
            tokens = entry.input_tokens * 10**6 + entry.output_tokens * 2 * 10**6
            assert entry.revenue == parse_usd(fee) + tokens  # pico-USD: $1 per 1M = 10**6 pico
            assert entry.cost > 0
