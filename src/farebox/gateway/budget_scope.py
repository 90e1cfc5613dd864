"""Which budgets apply to a request, and budget objects as configuration and JSON.

A budget is configured globally, per plan, and overridden per tenant, per workspace and per
key (each level replacing the one above for the same scope, period and name); a request's
``Scope`` (its tenant, workspace, key, feature, user and plan) picks the counters it is held
against: every level's at once.
Reserving against them is ``farebox.gateway.admission``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from farebox.config.settings import BudgetConfig, BudgetSettings
from farebox.core.budgets import BudgetSpec, Hold, HoldState, holds, merge
from farebox.core.money import decimal_ratio, format_usd, parse_usd
from farebox.core.periods import ROLLING_BUCKETS, WindowCache, parse_period
from farebox.core.periods import iso_utc as iso
from farebox.core.records import DEFAULT_WORKSPACE, ApiKey, Tenant, Workspace
from farebox.errors import InvalidRequest

HOLDS_CACHE_SIZE = 10_000
INCREASE_FIELDS = ("increase_usd", "increase_until")


def to_spec(data: Mapping[str, Any] | BudgetConfig, now: float) -> BudgetSpec:
    cfg = data if isinstance(data, BudgetConfig) else BudgetConfig.model_validate(data)
    increase = 0
    if cfg.increase_usd is not None and (cfg.increase_until is None or now < cfg.increase_until):
        increase = parse_usd(cfg.increase_usd)
    return BudgetSpec(
        scope=cfg.scope,
        period=parse_period(cfg.period),
        limit=parse_usd(cfg.limit_usd) if cfg.limit_usd is not None else 0,
        name=cfg.name,
        rollover_cap=parse_usd(cfg.rollover_cap_usd) if cfg.rollover_cap_usd else None,
        weight=decimal_ratio(cfg.weight) if cfg.weight is not None else None,
        increase=increase,
        basis=cfg.basis,
    )


def budget_ident(item: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """What identifies a budget object: a later one with the same ident replaces it."""
    return (item.get("scope", "tenant"), item.get("period", "month"), item.get("name"))


def validate_budgets(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Admin API input -> stored budget objects, or a 400 naming the problem."""
    out = []
    for i, item in enumerate(items):
        try:
            cfg = BudgetConfig.model_validate(item)
            to_spec(cfg, 0.0)
        except ValueError as exc:
            raise InvalidRequest(f"budgets[{i}]: {exc}", param=f"budgets[{i}]") from None
        out.append(cfg.model_dump(exclude_none=True))
    return out


def state_json(state: HoldState) -> dict[str, Any]:
    """A budget object as CONTRACT shows it in /v1/me and the admin API."""
    hold = state.hold
    return {
        "scope": hold.scope,
        "period": hold.period,
        "name": hold.name,
        "limit_usd": format_usd(state.limit),
        "used_usd": format_usd(state.used),
        "reserved_usd": format_usd(state.reserved),
        "remaining_usd": format_usd(state.remaining),
        "resets_at": iso(state.resets_at) if state.resets_at < 2.0**52 else None,
        **({"basis": "revenue"} if hold.unit == "revenue" else {}),
    }


@dataclass(frozen=True, slots=True)
class Scope:
    tenant: str
    key: str
    feature: str | None
    user: str | None
    plan: str
    tenant_budgets: tuple[Mapping[str, Any], ...] = ()
    key_budgets: tuple[Mapping[str, Any], ...] = ()
    since: float = 0.0  # when the tenant was created
    shared_key: bool = False  # a service key: its own counters are no one tenant's
    workspace: str | None = None  # the key's workspace (none for a service key's own scope)
    workspace_budgets: tuple[Mapping[str, Any], ...] = ()  # the workspace's overrides
    workspace_limits: tuple[Mapping[str, Any], ...] = ()  # its rate-limit overrides
    key_alert: int | None = None  # the key's own alert threshold (percent of its key budgets)

    @classmethod
    def of(cls, tenant: Tenant, key: ApiKey | None, plan: str, feature: str | None = None,
           user: str | None = None, workspace: str | Workspace | None = None) -> Scope:  # fmt: skip
        """``workspace``: the request's workspace (its record, to apply its overrides, or
        its id); by default the key's own (a tenant key's, else none)."""
        ws = workspace.id if isinstance(workspace, Workspace) else workspace
        if ws is None and key is not None and key.tenant_id is not None:
            ws = key.workspace_id or DEFAULT_WORKSPACE
        record = workspace if isinstance(workspace, Workspace) else None
        return cls(
            tenant=tenant.id,
            key=key.id if key else "",
            feature=feature,
            user=user,
            plan=plan,
            tenant_budgets=tuple(tenant.budgets),
            key_budgets=tuple(key.budgets) if key else (),
            since=tenant.created_at,
            shared_key=key is not None and key.tenant_id is None,
            workspace=ws,
            workspace_budgets=tuple(record.budgets) if record else (),
            workspace_limits=tuple(record.rate_limits) if record else (),
            key_alert=key.alert_threshold if key else None,
        )


class BudgetScopes:
    """The budgets of every plan (and the global ones), and the counters a scope holds."""

    __slots__ = ("_global", "_holds_cache", "_plan_specs", "_plans", "_windows", "_zone")

    def __init__(
        self, settings: BudgetSettings, plans: Mapping[str, Sequence[BudgetConfig]]
    ) -> None:
        self._zone = ZoneInfo(settings.timezone)
        self._plans: dict[str, list[BudgetConfig]] = {}
        self.reload(plans)
        self._global = list(settings.global_budgets)
        self._windows = WindowCache()

    def reload(self, plans: Mapping[str, Sequence[BudgetConfig]]) -> None:
        """New plan budgets (the config file changed): forget what was derived from the old."""
        self._plans = {name: list(budgets) for name, budgets in plans.items()}
        self._plan_specs: dict[str, list[BudgetSpec]] = {}
        self._holds_cache: dict[tuple[Any, ...], tuple[float, float, list[Hold]]] = {}

    def specs(self, scope: Scope, now: float) -> list[BudgetSpec]:
        plan = self._plan_specs.get(scope.plan)
        if plan is None:  # plan budgets never carry temporary increases: parse them once
            configs = (*self._global, *self._plans.get(scope.plan, ()))
            plan = self._plan_specs[scope.plan] = [to_spec(b, now) for b in configs]
        if not scope.tenant_budgets and not scope.key_budgets and not scope.workspace_budgets:
            return plan
        tenant = [to_spec(b, now) for b in scope.tenant_budgets]
        workspace = [to_spec(b, now) for b in scope.workspace_budgets]
        key = [to_spec(b, now) for b in scope.key_budgets]
        return merge(plan, tenant, workspace, key)

    def holds(self, scope: Scope, now: float) -> list[Hold]:
        """The counters in scope. Without overrides they depend only on who is asking and
        on the current windows, so they are cached until the first of those windows ends."""
        cacheable = not scope.tenant_budgets and not scope.key_budgets
        cacheable = cacheable and not scope.workspace_budgets
        slot = (scope.tenant, scope.key, scope.feature, scope.user, scope.plan, scope.since,
                scope.workspace)  # fmt: skip
        if cacheable:
            found = self._holds_cache.get(slot)
            if found is not None and found[0] <= now < found[1]:
                return found[2]
        specs = self.specs(scope, now)
        result = holds(specs, tenant=scope.tenant, key=scope.key, feature=scope.feature,
                       user=scope.user, now=now, zone=self._zone, windows=self._windows,
                       since=scope.since, shared_key=scope.shared_key,
                       workspace=scope.workspace)  # fmt: skip
        if cacheable:
            if len(self._holds_cache) >= HOLDS_CACHE_SIZE:
                self._holds_cache.clear()
            until = min((_bucket_end(h) for h in result), default=now)
            self._holds_cache[slot] = (now, until, result)
        return result

    def tenant_holds(
        self, tenant: Tenant, plan: str, keys: Sequence[ApiKey], now: float,
        workspaces: Sequence[Workspace] = (),
    ) -> list[Hold]:  # fmt: skip
        """Every budget counter of a tenant: tenant-wide, global, each workspace's and each
        key's (a key's in its workspace, whose overrides may change its key budgets)."""
        scoped = [h for h in self.holds(Scope.of(tenant, None, plan), now) if h.scope != "key"]
        spaces = {w.id: w for w in workspaces}
        for w in workspaces:
            ws = Scope.of(tenant, None, plan, workspace=w)
            scoped += [h for h in self.holds(ws, now) if h.scope == "workspace"]
        for key in keys:
            scope = Scope.of(tenant, key, plan, workspace=spaces.get(key.workspace_id))
            scoped += [h for h in self.holds(scope, now) if h.scope == "key"]
        return scoped

    def base_budget(
        self, tenant: Tenant, plan: str, scope: str, period: str, name: str | None
    ) -> dict[str, Any] | None:
        """The budget object a temporary increase applies to (override or plan)."""
        planned = [b.model_dump(exclude_none=True) for b in self._plans.get(plan, ())]
        for item in (*tenant.budgets, *planned):
            if budget_ident(item) == (scope, period, name):
                return {k: v for k, v in item.items() if k not in INCREASE_FIELDS}
        return None

    def enabled(self, scope: Scope) -> bool:
        return bool(
            self._global
            or self._plans.get(scope.plan)
            or scope.tenant_budgets
            or scope.key_budgets
            or scope.workspace_budgets
        )


def _bucket_end(hold: Hold) -> float:
    """When a hold's current bucket (the one new spend goes into) ends."""
    if hold.window_s:
        return hold.bucket + max(hold.window_s // ROLLING_BUCKETS, 1)
    return hold.resets_at
