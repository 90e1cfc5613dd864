"""What a request holds in revenue, beside its cost: for budgets kept in revenue
(``basis: revenue``) and for a prepaid tenant's credit balance.

``Fit`` answers two questions for admission: the worst case of a request with a given
``max_tokens`` (cost and revenue), and the largest ``max_tokens`` whose worst case fits what
the money counters have left. ``insufficient_credits`` is the refusal of a prepaid request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from farebox.core.budgets import HoldState, affordable_tokens, worst_case
from farebox.core.credits import CreditTerms
from farebox.core.pricing import Price
from farebox.errors import InsufficientCredits

SEARCH_CAP = 1 << 24  # max_tokens searched for a revenue fit when nothing else bounds it


@dataclass(frozen=True, slots=True)
class Revenue:
    """How a request's worst-case revenue follows from its worst-case cost and output
    tokens (the plan's pricing), and the plan's credit terms if it is prepaid."""

    priced: Callable[[int, int], int]
    terms: CreditTerms | None = None


def room(state: HoldState) -> int:
    return state.remaining


def room_settled(state: HoldState) -> int:
    """What a counter will have once the holds in flight settle (at best: to nothing)."""
    return max(state.limit - state.used, 0)


@dataclass(frozen=True, slots=True)
class Fit:
    prices: Sequence[Price]
    input_tokens: int
    priced: Callable[[int, int], int] | None = None

    def worst(self, tokens: int) -> tuple[int, int]:
        """The worst-case cost and revenue with at most ``tokens`` output tokens."""
        amount = worst_case(self.prices, self.input_tokens, tokens)
        return amount, (self.priced(amount, tokens) if self.priced else 0)

    def tokens(self, money: Sequence[HoldState], cap: int, room: Callable[[HoldState], int]) -> int:
        """The largest ``max_tokens`` (at most ``cap`` when only revenue counters bound it)
        whose worst case fits every money counter's ``room``; -1 when none does."""
        cost_rooms = [room(s) for s in money if s.hold.unit == "usd"]
        revenue_rooms = [room(s) for s in money if s.hold.unit == "revenue"]
        best = (
            affordable_tokens(self.prices, self.input_tokens, min(cost_rooms))
            if cost_rooms
            else cap
        )
        if not revenue_rooms or self.priced is None:
            return best
        limit = min(revenue_rooms)
        lo, hi = -1, min(best, max(cap, 0), SEARCH_CAP)  # the worst case grows with tokens
        if self.worst(hi)[1] <= limit:
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.worst(mid)[1] <= limit:
                lo = mid
            else:
                hi = mid
        return lo


def insufficient_credits(
    state: HoldState, terms: CreditTerms, needed: int, upgrade_url: str | None
) -> InsufficientCredits:
    """429 ``insufficient_credits``: the balance (and what is held in flight), what the
    request may cost at most, in credits, and where to top up."""
    c = terms.rate.credits
    extra: dict[str, Any] = {
        "balance": c(max(state.limit - state.used - state.reserved, 0)),
        "reserved": c(state.reserved),
        "required": c(needed),
    }
    if upgrade_url:
        extra["upgrade_url"] = upgrade_url
    message = (
        f"Insufficient credits: the balance of {extra['balance']} credits cannot cover this "
        f"request (up to {extra['required']} credits). Top up to continue"
        + (f": {upgrade_url}" if upgrade_url else ".")
    )
    return InsufficientCredits(message, headers={"x-should-retry": "false"}, extra=extra)
