"""A plan as the request path sees it: model access, token and input caps, tool policy and
revenue rule. (Budgets and rate limits are resolved by ``farebox.gateway.admission`` and
``farebox.gateway.rate_limits``.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from farebox.core.cache import CACHE_OFF, CachePolicy
from farebox.core.credentials import ByokFee
from farebox.core.credits import CreditTerms
from farebox.core.guardrails import GUARDRAILS_OFF, GuardrailPolicy
from farebox.core.money import mul_ratio
from farebox.core.pricing import Price, cost
from farebox.core.tiers import TierSchedule, units_of
from farebox.core.tools import ToolPolicy
from farebox.core.usage import Usage


@dataclass(frozen=True, slots=True)
class RequestPrice:
    """A price per served request (pico-USD): by feature first, then by model alias, else
    ``default``; plus an optional per-token part (``tokens``), charged on whatever was used."""

    default: int = 0
    models: tuple[tuple[str, int], ...] = ()
    features: tuple[tuple[str, int], ...] = ()
    tokens: Price | None = None

    def fee(self, model: str | None, feature: str | None) -> int:
        """The per-request part for a request to ``model`` with ``feature``."""
        for name, price in self.features:
            if name == feature:
                return price
        for name, price in self.models:
            if name == model:
                return price
        return self.default


@dataclass(frozen=True, slots=True)
class RevenueRule:
    """Revenue is cost times ``markup``, the usage at a resale price, a price per request
    (and its per-token part), or a tiered plan's graduated charge (``tiered``: the store
    that writes the entry sets its exact revenue from the month's usage; the value here is
    an upper bound, at the highest tier's rate)."""

    markup_num: int = 1
    markup_den: int = 1
    resale: Price | None = None
    per_request: RequestPrice | None = None
    tiered: TierSchedule | None = None
    byok: ByokFee | None = None  # issue 14: what a request on the tenant's own key earns

    def revenue(
        self,
        usage: Usage,
        cost_pico: int,
        model: str | None = None,
        feature: str | None = None,
        served: bool = True,
        byok: bool = False,
    ) -> int:
        """What one request earns. ``served``: it was answered (a per-request price is
        charged only then; tokens used by one that failed midway are charged as usual).
        ``byok``: it went on the tenant's own provider key: it earns the plan's ``byok_fee``
        (nothing without one), never the usual rule."""
        if byok:
            return self.byok.revenue(usage.total_tokens, served) if self.byok else 0
        if self.per_request is not None:
            price = self.per_request
            used = cost(usage, price.tokens) if price.tokens is not None else 0
            return used + (price.fee(model, feature) if served else 0)
        if self.resale is not None:
            return cost(usage, self.resale)
        if self.tiered is not None:
            status = "ok" if served else "error"
            units = units_of(self.tiered.metric, status, usage.total_tokens, cost_pico)
            return self.tiered.at_most(units)
        return mul_ratio(cost_pico, self.markup_num, self.markup_den)

    def worst(
        self,
        cost_pico: int,
        input_tokens: int,
        output_tokens: int,
        model: str | None = None,
        feature: str | None = None,
    ) -> int:
        """The most ``revenue`` can be for a request whose worst-case cost is ``cost_pico``
        with at most these tokens (what a revenue budget or a credit balance holds): on the
        tenant's own key the request may earn the ``byok_fee`` instead, so the larger."""
        usual = self._worst(cost_pico, input_tokens, output_tokens, model, feature)
        if self.byok is None:
            return usual
        return max(usual, self.byok.worst(input_tokens + output_tokens))

    def _worst(
        self,
        cost_pico: int,
        input_tokens: int,
        output_tokens: int,
        model: str | None,
        feature: str | None,
    ) -> int:
        if self.per_request is not None:
            price = self.per_request
            tokens = _most(price.tokens, input_tokens, output_tokens) if price.tokens else 0
            return tokens + price.fee(model, feature)
        if self.resale is not None:
            return _most(self.resale, input_tokens, output_tokens)
        if self.tiered is not None:  # every unit at the dearest tier's rate
            units = units_of(self.tiered.metric, "ok", input_tokens + output_tokens, cost_pico)
            return self.tiered.at_most(units)
        return mul_ratio(cost_pico, self.markup_num, self.markup_den)


def _most(price: Price, input_tokens: int, output_tokens: int) -> int:
    """The most these tokens can cost at ``price`` (an input token at its dearest rate)."""
    rate = max(price.input, price.cache_write_5m, price.cache_write_1h, price.cached_input)
    return input_tokens * rate + output_tokens * price.output


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
    credits: CreditTerms | None = None  # prepaid: requests burn a credit balance
    guardrails: GuardrailPolicy = GUARDRAILS_OFF  # issue 15

    def allows(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.models)
