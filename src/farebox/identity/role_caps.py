"""What a ``tenant_admin`` may change on its own tenant and keys: within its plan. Pure.

- A tenant: ``name``, ``metadata``, ``budgets`` and ``rate_limits``; never ``plan`` nor the
  ``billing`` ids (403 ``insufficient_role``: an operator's).
- A budget or rate limit it sets (on the tenant or on a key) replaces the one with the same
  ident (budgets: scope, period, name; rate limits: scope, model). Where the plan or what is
  in force now caps that ident, the new one may not exceed the higher of the two: a budget's
  ``limit_usd`` (or a feature budget's ``weight``) at most that, on the same ``basis``; a
  rate limit's requests and tokens per window at most that rate, and ``concurrent`` at most
  that; a limit may not be removed (left null) where one is in force. A new ident (one
  neither the plan nor the tenant has) only narrows: any value. A named budget (a user's, a
  feature's) takes over the counter of its scope's unnamed one (``core.budgets.holds``), so it
  is capped by that one too. A budget may not carry a
  temporary increase (``increase_usd``, ``increase_until``) nor a ``rollover_cap_usd``,
  unless it is the very object already in force, and never scope ``global``.

Objects already in force, sent back unchanged, always pass (a PATCH sends the whole list).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from farebox.errors import InsufficientRole

TENANT_FIELDS = frozenset({"name", "metadata", "budgets", "rate_limits"})
RAISES = ("increase_usd", "increase_until", "rollover_cap_usd")
RATE_FIELDS = ("requests_per_minute", "tokens_per_minute")
Item = Mapping[str, Any]


def same(item: Item, others: Sequence[Item]) -> bool:
    """``item`` is one of ``others`` (as stored: money as text or as decimals alike)."""
    mine = json.dumps(item, sort_keys=True, default=str)
    return any(mine == json.dumps(o, sort_keys=True, default=str) for o in others)


def budget_ident(item: Item) -> tuple[Any, ...]:
    return (item.get("scope", "tenant"), item.get("period", "month"), item.get("name"))


def generic_ident(ident: tuple[Any, ...]) -> tuple[Any, ...]:
    """The unnamed ident of a budget's scope and period: the counter a named one takes over."""
    return (*ident[:2], None)


def limit_ident(item: Item) -> tuple[Any, ...]:
    return (item.get("scope", "key"), item.get("model"))


def _refuse(message: str, param: str) -> InsufficientRole:
    return InsufficientRole(
        f"A tenant_admin works within its plan: {message}", param=param,
        extra={"needed_role": "operator"},
    )  # fmt: skip


def check_tenant_fields(changes: Iterable[str]) -> None:
    """Refuse the fields of a tenant only an operator changes (its plan, its billing ids)."""
    for name in sorted(set(changes) - TENANT_FIELDS):
        raise _refuse(f"changing '{name}' needs the 'operator' role.", name)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _caps(
    ident: Callable[[Item], tuple[Any, ...]], *layers: Sequence[Item]
) -> dict[tuple[Any, ...], list[Item]]:
    found: dict[tuple[Any, ...], list[Item]] = {}
    for layer in layers:
        for item in layer:
            found.setdefault(ident(item), []).append(item)
    return found


def _changed(
    proposed: Sequence[Item], current: Sequence[Item], field: str
) -> Iterator[tuple[str, Item]]:
    """The proposed items that are not already in force, each with where it stands."""
    for i, item in enumerate(proposed):
        if not same(item, current):
            yield f"{field}[{i}]", item


def check_budgets(
    proposed: Sequence[Item], plan: Sequence[Item], current: Sequence[Item], field: str
) -> None:
    """Each proposed budget within the plan's and the current one of its ident."""
    caps = _caps(budget_ident, plan, current)
    for where, item in _changed(proposed, current, field):
        if item.get("scope") == "global":
            raise _refuse("a global budget is the platform's.", where)
        if any(item.get(name) is not None for name in RAISES):
            raise _refuse("a temporary increase or a rollover is an operator's.", where)
        ident = budget_ident(item)
        allowed = [*caps.get(ident, ())]
        if ident[2] is not None:  # a named budget replaces the generic one of its counter
            allowed += caps.get(generic_ident(ident), ())
        if allowed and not any(_within_budget(item, cap) for cap in allowed):
            raise _refuse(
                "a budget's limit_usd (or weight) may be at most the plan's or the one in "
                "force, on the same basis; it may not be removed.",
                where,
            )


def _within_budget(item: Item, cap: Item) -> bool:
    if item.get("basis", "cost") != cap.get("basis", "cost"):
        return False
    for name in ("limit_usd", "weight"):
        ceiling = _decimal(cap.get(name))
        if ceiling is None:
            continue
        value = _decimal(item.get(name))
        if value is None or value > ceiling:
            return False
    return True


def check_limits(
    proposed: Sequence[Item], plan: Sequence[Item], current: Sequence[Item], field: str
) -> None:
    """Each proposed rate limit within the plan's and the current one of its ident."""
    caps = _caps(limit_ident, plan, current)
    for where, item in _changed(proposed, current, field):
        allowed = caps.get(limit_ident(item), ())
        if allowed and not any(_within_limit(item, cap) for cap in allowed):
            raise _refuse(
                "a rate limit may be at most the plan's or the one in force (per window).", where
            )


def _within_limit(item: Item, cap: Item) -> bool:
    window, cap_window = int(item.get("window_s", 60)), int(cap.get("window_s", 60))
    for name in RATE_FIELDS:
        ceiling = cap.get(name)
        if ceiling is None:
            continue
        value = item.get(name)
        if value is None or value * cap_window > ceiling * window:  # rates, cross-multiplied
            return False
    ceiling = cap.get("concurrent")
    value = item.get("concurrent")
    return ceiling is None or (value is not None and value <= ceiling)
