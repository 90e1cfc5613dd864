"""The cache's config sections: a plan's ``cache:`` becomes the request path's policy exactly,
and a bad value is a start-up error naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.config.settings import parse_settings
from farebox.core.cache import HitPrice
from farebox.errors import ConfigError
from farebox.gateway.routing_table import build_plans


def _parse(tmp_path: Path, plan_cache: Any, top: Any = None) -> Any:
    data: dict[str, Any] = {
        "database": f"sqlite:///{tmp_path / 'f.db'}",
        "plans": {"pro": {"cache": plan_cache}},
    }
    if top is not None:
        data["cache"] = top
    return parse_settings(data, source="farebox.yaml", env={}, base_dir=tmp_path)


def test_a_plan_cache_becomes_its_policy(tmp_path: Path) -> None:
    s = _parse(tmp_path, {"mode": "semantic", "ttl_s": 60, "partition": "key",
                          "hit_price": "0.25", "semantic_max_temperature": "0.7"})  # fmt: skip
    policy = build_plans(s)["pro"].cache
    assert (policy.mode, policy.ttl_s, policy.partition) == ("semantic", 60, "key")
    assert policy.hit_price == HitPrice(1, 4) and policy.semantic and policy.enabled
    assert (policy.max_temperature_num, policy.max_temperature_den) == (7, 10)
    assert not build_plans(s)["default"].cache.enabled
    free = build_plans(_parse(tmp_path, {"mode": "exact", "hit_price": "free"}))["pro"].cache
    assert free.hit_price.revenue(10**12) == 0


@pytest.mark.parametrize(
    ("plan_cache", "top", "named"),
    [
        ({"mode": "fuzzy"}, None, "plans.pro.cache.mode"),
        ({"hit_price": "1.5"}, None, "plans.pro.cache.hit_price"),
        ({"hit_price": "half"}, None, "plans.pro.cache.hit_price"),
        ({"ttl_s": 0}, None, "plans.pro.cache.ttl_s"),
        ({"partition": "org"}, None, "plans.pro.cache.partition"),
        ({"colour": "red"}, None, "plans.pro.cache.colour"),
        ({}, {"backend": "disk"}, "cache.backend"),
        ({}, {"semantic": {"threshold": 1.5}}, "cache.semantic.threshold"),
        ({}, {"semantic": {"queue": 0}}, "cache.semantic.queue"),
    ],
)
def test_bad_cache_config_names_the_key(
    tmp_path: Path, plan_cache: Any, top: Any, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(tmp_path, plan_cache, top)
    assert named in str(caught.value)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    )
)
def test_any_plan_cache_value_loads_or_is_a_config_error(tmp_path: Path, value: Any) -> None:
    try:
        build_plans(_parse(tmp_path, value))
    except ConfigError as exc:
        assert "invalid configuration" in str(exc) or "cache" in str(exc)
