"""Exact money.

Every amount is an ``int`` of pico-USD (10^-12 USD). A price given in USD per one
million tokens with at most six decimal places is then an exact integer number of
pico-USD per token, so ``tokens * price`` never rounds.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

PICO_PER_USD = 10**12
MAX_DIGITS = 40  # digits before the decimal point we accept; larger is surely a mistake
PRICE_DECIMALS = 6  # decimals allowed in a "USD per 1M tokens" price


class MoneyFormatError(ValueError):
    """A decimal string could not be read as an exact amount."""


def parse_usd(text: str | int, *, field: str = "amount") -> int:
    """Parse a decimal USD string (``"0.50"``) into exact pico-USD."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise MoneyFormatError(f'{field}: expected a decimal string such as "0.50"')
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as exc:
        raise MoneyFormatError(f"{field}: {text!r} is not a decimal number") from exc
    if not value.is_finite():
        raise MoneyFormatError(f"{field}: {text!r} is not a finite number")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if len(digits) + exponent > MAX_DIGITS:
        raise MoneyFormatError(f"{field}: {text!r} is too large")
    # exact integer arithmetic on the digits: no decimal context, so no rounding
    mantissa = int("".join(map(str, digits)) or "0")
    shift = exponent + 12
    if shift < -len(digits) and mantissa:
        raise MoneyFormatError(f"{field}: {text!r} has more than 12 decimal places")
    pico: int
    if shift >= 0:
        pico = mantissa * 10**shift
    else:
        pico, rest = divmod(mantissa, 10 ** (-shift))
        if rest:
            raise MoneyFormatError(f"{field}: {text!r} has more than 12 decimal places")
    return -pico if sign else pico


def price_per_token(per_million_usd: str | int, *, field: str = "price") -> int:
    """A price in USD per 1M tokens -> exact pico-USD per token."""
    pico_per_million = parse_usd(per_million_usd, field=field)
    if pico_per_million < 0:
        raise MoneyFormatError(f"{field}: a price cannot be negative")
    if pico_per_million % 1_000_000:
        raise MoneyFormatError(
            f"{field}: {per_million_usd!r} has more than {PRICE_DECIMALS} decimal places"
        )
    return pico_per_million // 1_000_000


def format_usd(pico: int) -> str:
    """Exact decimal string of a pico-USD amount, trailing zeros trimmed, >= 2 decimals."""
    sign = "-" if pico < 0 else ""
    whole, frac = divmod(abs(pico), PICO_PER_USD)
    digits = f"{frac:012d}".rstrip("0")
    if len(digits) < 2:
        digits = digits.ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def display_usd(pico: int) -> str:
    """For people, not ledgers: ``$1,234.57``, rounded half away from zero to the cent."""
    cents = mul_ratio(pico, 1, PICO_PER_USD // 100)
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{frac:02d}"


def mul_ratio(pico: int, numerator: int, denominator: int) -> int:
    """``pico * numerator / denominator`` rounded half away from zero, in integers."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    product = pico * numerator
    quotient, remainder = divmod(abs(product), denominator)
    if remainder * 2 >= denominator:
        quotient += 1
    return quotient if product >= 0 else -quotient


def decimal_ratio(text: str, *, field: str = "multiplier") -> tuple[int, int]:
    """A decimal string such as ``"1.25"`` as an exact ``(numerator, denominator)``."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as exc:
        raise MoneyFormatError(f"{field}: {text!r} is not a decimal number") from exc
    if not value.is_finite() or value < 0:
        raise MoneyFormatError(f"{field}: {text!r} must be a finite, non-negative number")
    num, den = value.as_integer_ratio()
    return num, den
