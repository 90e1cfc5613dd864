"""Public model names -> ordered deployments, each with its exact price."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from farebox.core.pricing import Price


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str
    price: Price
    kind: str = "chat"  # chat | reasoning | embedding
    weight: int = 1
    timeout_s: float = 600.0  # the provider's own upstream timeout
    context_window: int | None = None  # tokens, when the deployment declares it (issue 15)


class Router:
    def __init__(self, routes: Mapping[str, tuple[Target, ...]]) -> None:
        self._routes = dict(routes)

    def resolve(self, name: str) -> tuple[Target, ...] | None:
        return self._routes.get(name)

    def names(self) -> list[str]:
        return sorted(self._routes)


def weighted_order(targets: tuple[Target, ...], pick: float) -> tuple[Target, ...]:
    """The order to try deployments in. Equal weights keep the configured order. Otherwise
    the first is drawn by weight (``pick`` is uniform in [0, 1)); weight 0 means fallback
    only. The others follow in their configured order."""
    if len(targets) < 2 or len({t.weight for t in targets}) == 1:
        return targets
    total = sum(t.weight for t in targets)
    if total <= 0:
        return targets
    point = pick * total
    for i, target in enumerate(targets):
        point -= target.weight
        if point < 0 and target.weight > 0:
            return (target, *targets[:i], *targets[i + 1 :])
    return targets
