"""Issue 14: the role model and a tenant_admin's plan caps, pure (``identity.roles``,
``identity.role_caps``), with properties over every role, need and value."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.core.records import ADMIN_ROLES
from farebox.errors import InsufficientRole
from farebox.identity.role_caps import check_budgets, check_limits, check_tenant_fields
from farebox.identity.roles import (
    NEEDS,
    OWNER,
    AdminActor,
    decide,
    refusal_message,
    role_of,
    scoped,
)

actors = st.builds(
    AdminActor,
    key_id=st.text(max_size=8),
    role=st.sampled_from(ADMIN_ROLES),
    tenant=st.none() | st.sampled_from(("acme", "globex")),
)


@given(actor=actors, need=st.sampled_from(NEEDS), tenant_ok=st.booleans())
def test_a_tenant_admin_is_never_told_forbidden_and_no_one_else_is_hidden(
    actor: AdminActor, need: str, tenant_ok: bool
) -> None:
    verdict = decide(actor, need, tenant_ok)
    if actor.role == "tenant_admin":
        assert verdict in ("allow", "hide")
        assert verdict == "allow" or not (
            tenant_ok and need in ("read", "operate") and actor.tenant
        )
        assert need not in ("billing", "owner") or verdict == "hide"
    else:
        assert verdict in ("allow", "forbid")
        assert (verdict == "allow") == actor.grants(need)


def test_the_grants() -> None:
    table = {
        role: {n for n in NEEDS if decide(AdminActor("k", role), n, False) == "allow"}
        for role in ("owner", "operator", "billing", "viewer")
    }
    assert table == {
        "owner": set(NEEDS),
        "operator": {"read", "operate"},
        "billing": {"read", "billing"},
        "viewer": {"read"},
    }
    assert OWNER.role == "owner" and OWNER.key_id == "env"
    assert "'operator'" in refusal_message("operate") and "'owner'" in refusal_message("owner")
    with pytest.raises(ValueError):
        role_of("root")
    with pytest.raises(ValueError):
        decide(OWNER, "everything", False)


@given(actor=actors, tenant=st.none() | st.sampled_from(("acme", "globex")))
def test_scoped_is_its_own_tenant_only(actor: AdminActor, tenant: str | None) -> None:
    if actor.role != "tenant_admin":
        assert scoped(actor, tenant)
    else:
        assert scoped(actor, tenant) == (tenant is not None and tenant == actor.tenant)


PLAN = [{"scope": "tenant", "period": "month", "limit_usd": Decimal("50"), "basis": "cost"}]
LIMITS = [{"scope": "key", "window_s": 60, "requests_per_minute": 600}]
money = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False)


@given(limit=money)
def test_a_budget_up_to_the_plans_passes_and_above_it_is_refused(limit: Decimal) -> None:
    proposed = [{"scope": "tenant", "period": "month", "limit_usd": limit, "basis": "cost"}]
    if limit <= 50:
        check_budgets(proposed, PLAN, [], "budgets")
    else:
        with pytest.raises(InsufficientRole):
            check_budgets(proposed, PLAN, [], "budgets")


@given(limit=money)
def test_a_budget_up_to_the_one_in_force_passes(limit: Decimal) -> None:
    current = [{"scope": "tenant", "period": "month", "limit_usd": "900", "basis": "cost"}]
    proposed = [{"scope": "tenant", "period": "month", "limit_usd": limit, "basis": "cost"}]
    if limit <= 900:  # 900 granted by an operator: anything up to it
        check_budgets(proposed, PLAN, current, "budgets")
    else:
        with pytest.raises(InsufficientRole):
            check_budgets(proposed, PLAN, current, "budgets")
    check_budgets([{**current[0], "limit_usd": Decimal("900")}], PLAIN_PLAN, current, "budgets")


PLAIN_PLAN: list[dict[str, object]] = []


@given(scope=st.sampled_from(("user", "feature", "key")), name=st.text(min_size=1, max_size=8),
       limit=money, named_cap=st.none() | money)  # fmt: skip
def test_a_named_budget_is_capped_by_the_unnamed_one_of_its_counter(
    scope: str, name: str, limit: Decimal, named_cap: Decimal | None
) -> None:
    """A budget named for a user or a feature takes over its scope's generic counter: it may
    be at most the higher of the unnamed cap and a cap of that very name."""
    generic = {"scope": scope, "period": "month", "limit_usd": Decimal("5"), "basis": "cost"}
    plan = [generic]
    if named_cap is not None:
        plan.append({**generic, "name": name, "limit_usd": named_cap})
    proposed = [{**generic, "name": name, "limit_usd": limit}]
    if limit <= max(Decimal("5"), named_cap if named_cap is not None else Decimal("0")):
        check_budgets(proposed, plan, [], "budgets")
    else:
        with pytest.raises(InsufficientRole):
            check_budgets(proposed, plan, [], "budgets")


@given(rpm=st.integers(0, 2000), window=st.integers(1, 3600))
def test_a_rate_limit_is_compared_per_window(rpm: int, window: int) -> None:
    proposed = [{"scope": "key", "window_s": window, "requests_per_minute": rpm}]
    if rpm * 60 <= 600 * window:
        check_limits(proposed, LIMITS, [], "rate_limits")
    else:
        with pytest.raises(InsufficientRole):
            check_limits(proposed, LIMITS, [], "rate_limits")


def test_what_a_tenant_admin_may_never_set() -> None:
    for fields in (["plan"], ["billing"], ["name", "plan"]):
        with pytest.raises(InsufficientRole):
            check_tenant_fields(fields)
    check_tenant_fields(["name", "metadata", "budgets", "rate_limits"])
    for item in (
        {"scope": "global", "period": "month", "limit_usd": "1"},
        {"scope": "tenant", "period": "month", "limit_usd": "1", "increase_usd": "5"},
        {"scope": "tenant", "period": "month", "limit_usd": "1", "rollover_cap_usd": "5"},
        {"scope": "tenant", "period": "month", "limit_usd": "1", "basis": "revenue"},
    ):
        with pytest.raises(InsufficientRole):
            check_budgets([item], PLAN, [], "budgets")
    with pytest.raises(InsufficientRole):  # no cap where the plan has one
        check_limits([{"scope": "key", "window_s": 60}], LIMITS, [], "rate_limits")
    check_budgets([{"scope": "tenant", "period": "day", "limit_usd": "99"}], PLAN, [], "budgets")
