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


class Router:
    def __init__(self, routes: Mapping[str, tuple[Target, ...]]) -> None:
        self._routes = dict(routes)

    def resolve(self, name: str) -> tuple[Target, ...] | None:
        return self._routes.get(name)

    def names(self) -> list[str]:
        return sorted(self._routes)
