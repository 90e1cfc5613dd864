"""A plan as the request path sees it: model access, token and input caps, tool policy and
revenue rule. (Budgets and rate limits are resolved by ``farebox.gateway.admission`` and
``farebox.gateway.rate_limits``.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from farebox.core.cache import CACHE_OFF, CachePolicy
from farebox.core.money import mul_ratio
from farebox.core.pricing import Price, cost
from farebox.core.tools import ToolPolicy
from farebox.core.usage import Usage


@dataclass(frozen=True, slots=True)
class RevenueRule:
    """Revenue is cost times ``markup`` or the usage at a resale price."""

    markup_num: int = 1
    markup_den: int = 1
    resale: Price | None = None

    def revenue(self, usage: Usage, cost_pico: int) -> int:
        if self.resale is not None:
            return cost(usage, self.resale)
        return mul_ratio(cost_pico, self.markup_num, self.markup_den)


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    models: tuple[str, ...] = ("*",)
    max_tokens: int | None = None
    max_tokens_policy: str = "clamp"
    max_input_chars: int | None = None
    max_input_tokens: int | None = None
    tools: ToolPolicy = field(default_factory=ToolPolicy)
    timeout_s: float | None = None
    revenue: RevenueRule = field(default_factory=RevenueRule)
    downgrade: tuple[tuple[str, str], ...] = ()
    cache: CachePolicy = CACHE_OFF

    def allows(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.models)
