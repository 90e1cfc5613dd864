"""Drawing a fixed list of hypothesis examples outside a ``@given`` test."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st


def draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` examples, the same ones every run (derandomized, no database, no shrinking)."""
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn
