"""Prices and exact cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from farebox.core.money import MoneyFormatError, price_per_token
from farebox.core.usage import Usage

_FIELDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output")


@dataclass(frozen=True, slots=True)
class Price:
    """Pico-USD per token for each kind of token."""

    input: int
    output: int
    cached_input: int
    cache_write_5m: int
    cache_write_1h: int

    @classmethod
    def from_per_million(cls, data: Mapping[str, object], *, where: str = "price") -> Price:
        """Build from decimal strings in USD per 1M tokens.

        ``cached_input`` and ``cache_write_*`` default to the input price when absent
        (providers that do not discount cache reads or charge cache writes).
        """
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise MoneyFormatError(f"{where}: unknown price field(s) {sorted(unknown)}")
        if "input" not in data:
            raise MoneyFormatError(f"{where}: 'input' is required")
        values: dict[str, int] = {}
        for name in _FIELDS:
            raw = data.get(name)
            if raw is None:
                continue
            if not isinstance(raw, str | int) or isinstance(raw, bool):
                raise MoneyFormatError(f'{where}.{name}: expected a decimal string like "2.50"')
            values[name] = price_per_token(raw, field=f"{where}.{name}")
        base = values["input"]
        return cls(
            input=base,
            output=values.get("output", 0),
            cached_input=values.get("cached_input", base),
            cache_write_5m=values.get("cache_write_5m", base),
            cache_write_1h=values.get("cache_write_1h", base),
        )

    def merged(self, override: Mapping[str, object], *, where: str) -> Price:
        """This price with some fields replaced (a per-deployment override)."""
        unknown = set(override) - set(_FIELDS)
        if unknown:
            raise MoneyFormatError(f"{where}: unknown price field(s) {sorted(unknown)}")
        fields = {name: getattr(self, name) for name in _FIELDS}
        for name, raw in override.items():
            if not isinstance(raw, str | int) or isinstance(raw, bool):
                raise MoneyFormatError(f'{where}.{name}: expected a decimal string like "2.50"')
            fields[name] = price_per_token(raw, field=f"{where}.{name}")
        return Price(**fields)


FREE = Price(input=0, output=0, cached_input=0, cache_write_5m=0, cache_write_1h=0)


def cost(usage: Usage, price: Price) -> int:
    """Exact cost in pico-USD."""
    return (
        usage.uncached_input_tokens * price.input
        + usage.cached_input_tokens * price.cached_input
        + usage.cache_write_5m_tokens * price.cache_write_5m
        + usage.cache_write_1h_tokens * price.cache_write_1h
        + usage.output_tokens * price.output
    )


@dataclass(frozen=True, slots=True)
class Catalog:
    """A dated price table: model name -> price, plus each model's provider family."""

    date: str
    prices: Mapping[str, Price]
    families: Mapping[str, str]
    kinds: Mapping[str, str]

    def get(self, model: str) -> Price | None:
        return self.prices.get(model)


def parse_catalog(data: Mapping[str, object]) -> Catalog:
    """Parse the shipped JSON catalog structure."""
    date = str(data.get("date", ""))
    models = data.get("models")
    if not isinstance(models, dict):
        raise MoneyFormatError("catalog: 'models' must be an object")
    prices: dict[str, Price] = {}
    families: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise MoneyFormatError(f"catalog.models.{name}: expected an object")
        fields = {k: v for k, v in entry.items() if k in _FIELDS}
        prices[name] = Price.from_per_million(fields, where=f"catalog.models.{name}")
        families[name] = str(entry.get("provider", "openai"))
        kinds[name] = str(entry.get("kind", "chat"))
    return Catalog(date=date, prices=prices, families=families, kinds=kinds)
