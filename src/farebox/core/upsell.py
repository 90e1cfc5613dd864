"""Upsell moments and conversions (issue [13], revenue intelligence), pure.

A refusal for want of money (``budget_exceeded``, ``insufficient_credits``) is an *upsell
moment*: the tenant hit a wall it could pay to pass. At most one moment is kept per tenant,
kind, budget and UTC hour (``Moment.hour``), however many requests the wall refused in that
hour: a refusal storm writes one row, not one per request.

A refused tenant *converts* when, within ``window_s`` after one of its moments (from the
moment's hour, inclusive, to the hour plus the window, inclusive), it moves to a plan with a
higher monthly fee (``PlanChange``) or buys a credit top-up (``TopUp``). Each refused tenant
counts once per group (plan, budget), converted or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

HOUR = 3600
KINDS = ("budget_exceeded", "insufficient_credits")


def hour_of(at: float) -> int:
    """The UTC hour ``at`` falls in, as unix seconds."""
    return int(at // HOUR) * HOUR


def budget_label(scope: str | None, period: str | None, name: str | None) -> str:
    """How a report names a budget: ``tenant/month``, ``user/day/search`` (empty: none)."""
    return "/".join(p for p in (scope, period, name) if p)


@dataclass(frozen=True, slots=True)
class Moment:
    """One upsell moment: ``tenant_id`` on ``plan`` refused for ``kind`` (one of ``KINDS``)
    by ``budget`` (``budget_label``; empty for credits) in the UTC hour ``hour``."""

    tenant_id: str
    kind: str
    budget: str
    hour: int
    plan: str

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.tenant_id, self.kind, self.budget, self.hour)


@dataclass(frozen=True, slots=True)
class PlanChange:
    """``tenant_id`` moved from ``from_plan`` to ``to_plan`` at ``at`` (unix seconds)."""

    tenant_id: str
    from_plan: str
    to_plan: str
    at: float


@dataclass(frozen=True, slots=True)
class TopUp:
    """A credit grant of kind ``top_up``: ``amount`` pico-USD at ``at``."""

    tenant_id: str
    amount: int
    at: float


@dataclass(frozen=True, slots=True)
class Group:
    """One line of the report: the moments of a plan (or budget) and their tenants."""

    name: str
    moments: int
    refused: tuple[str, ...]  # tenant ids, sorted
    converted: tuple[str, ...]  # the refused ones that converted, sorted


def converting_times(
    changes: Iterable[PlanChange], top_ups: Iterable[TopUp], fee: Callable[[str], int]
) -> dict[str, list[float]]:
    """Per tenant, when it did something that converts: an upgrade (to a plan whose fee is
    higher than the one it left) or a top-up."""
    out: dict[str, list[float]] = {}
    for c in changes:
        if fee(c.to_plan) > fee(c.from_plan):
            out.setdefault(c.tenant_id, []).append(c.at)
    for t in top_ups:
        out.setdefault(t.tenant_id, []).append(t.at)
    return out


def converted(moment: Moment, times: Mapping[str, Sequence[float]], window_s: float) -> bool:
    return any(
        moment.hour <= at <= moment.hour + window_s for at in times.get(moment.tenant_id, ())
    )


def groups(
    moments: Sequence[Moment],
    name: Callable[[Moment], str],
    times: Mapping[str, Sequence[float]],
    window_s: float,
) -> list[Group]:
    """The moments grouped by ``name``, each with its refused and converted tenants."""
    by: dict[str, list[Moment]] = {}
    for m in moments:
        by.setdefault(name(m), []).append(m)
    out = []
    for label in sorted(by):
        held = by[label]
        refused = sorted({m.tenant_id for m in held})
        won = sorted({m.tenant_id for m in held if converted(m, times, window_s)})
        out.append(Group(label, len(held), tuple(refused), tuple(won)))
    return out
