"""Weighted deployments: the first is drawn by weight, the rest keep their order."""

from __future__ import annotations


def test_weighted_order_draws_the_first_by_weight_and_keeps_the_rest_in_order() -> None:
    from farebox.core.pricing import Price
    from farebox.core.routing import Target, weighted_order

    price = Price.from_per_million({"input": "1", "output": "1"}, where="t")
    a, b, c = (Target("p", m, price, weight=w) for m, w in (("a", 3), ("b", 1), ("c", 0)))
    assert weighted_order((a, b, c), 0.0) == (a, b, c)
    assert weighted_order((a, b, c), 0.74) == (a, b, c)
    assert weighted_order((a, b, c), 0.75) == (b, a, c)
    assert weighted_order((a, b, c), 0.9999) == (b, a, c)
    equal = tuple(Target("p", m, price) for m in "xyz")
    assert weighted_order(equal, 0.99) == equal  # equal weights: the configured order
    counts = {"a": 0, "b": 0}
    for i in range(400):
        counts[weighted_order((a, b, c), i / 400)[0].model] += 1
    assert counts == {"a": 300, "b": 100}
