"""The ``anomaly:`` section of farebox.yaml, and each plan's ``anomaly:`` overrides.

Validated here; secrets (``env:NAME``) are resolved by ``farebox.config.settings``, which
alone reads the environment.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field

from farebox.config.base import Decimal, EnvReference, Strict
from farebox.core.anomaly import Policy
from farebox.core.money import parse_usd

ActionName = Literal["pause_tenant", "pause_key", "alert"]


class PagerDutyConfig(Strict):
    routing_key: EnvReference  # the 32-character integration key
    base_url: str = "https://events.pagerduty.com"
    severity: Literal["critical", "error", "warning", "info"] = "critical"
    source: str = "farebox"
    client_url: str | None = None  # a link shown on the incident, e.g. the admin dashboard


class SlackConfig(Strict):
    webhook_url: EnvReference  # an incoming-webhook URL carries its own secret


class AnomalyTuning(Strict):
    """What a plan may override; unset fields keep the gateway-wide value."""

    enabled: bool | None = None
    action: ActionName | None = None
    threshold_pct: int | None = Field(None, ge=1)
    window_s: int | None = Field(None, ge=60, le=3600, multiple_of=60)
    min_requests_per_hour: int | None = Field(None, ge=0)
    min_spend_usd_per_hour: Decimal | None = None
    floor_requests_per_hour: int | None = Field(None, ge=0)
    floor_spend_usd_per_hour: Decimal | None = None
    history_days: int | None = Field(None, ge=1, le=90)
    quantile_pct: int | None = Field(None, ge=1, le=100)
    recent_hours: int | None = Field(None, ge=1, le=48)
    learning_hours: int | None = Field(None, ge=0)
    cooldown_s: int | None = Field(None, ge=0)


class MultiplicationConfig(Strict):
    """``anomaly.account_multiplication`` (issue 15): one client (an IP, or the device the
    SaaS names in ``X-Farebox-Device``) using keys of more than ``max_tenants`` tenants on
    ``plans`` within ``window_s`` opens one incident, paged once per client and window."""

    enabled: bool = True  # and anomaly.enabled
    max_tenants: int = Field(5, ge=1)
    window_s: int = Field(86400, ge=60, le=30 * 86400)
    plans: list[str] = Field(default_factory=lambda: ["free"])
    # pause_tenant: every tenant of the client's in the window; pause_key: every key it used
    action: ActionName = "pause_tenant"


class AnomalySettings(Strict):
    enabled: bool = True
    action: ActionName = "pause_tenant"
    threshold_pct: int = Field(500, ge=1)  # 500% above the baseline: six times it
    window_s: int = Field(600, ge=60, le=3600, multiple_of=60)  # the recent window, whole minutes
    min_requests_per_hour: int = Field(120, ge=0)
    min_spend_usd_per_hour: Decimal = "1"
    floor_requests_per_hour: int = Field(60, ge=0)  # the least baseline, for new tenants
    floor_spend_usd_per_hour: Decimal = "0.50"
    history_days: int = Field(30, ge=1, le=90)
    quantile_pct: int = Field(90, ge=1, le=100)
    recent_hours: int = Field(3, ge=1, le=48)
    learning_hours: int = Field(24, ge=0)  # less history: alert only; a new key: its tenant's
    cooldown_s: int = Field(3600, ge=0)
    check_interval_s: float = Field(60.0, gt=0)  # how often each process looks
    flush_interval_s: float = Field(5.0, gt=0)  # how often counts reach the store
    appeal: str = "Contact the platform operator to review the pause and resume it."
    webhook: bool = True  # also send signed events to budgets.alert_webhook_url
    pagerduty: PagerDutyConfig | None = None
    slack: SlackConfig | None = None
    retry_attempts: int = Field(6, ge=1, le=50)
    retry_backoff_s: float = Field(1.0, gt=0)  # doubled each attempt, at most 30 s
    drain_s: float = Field(5.0, ge=0)  # at shutdown, how long alerts still in flight may take
    account_multiplication: MultiplicationConfig = Field(default_factory=MultiplicationConfig)


def policy(base: AnomalySettings, plan: AnomalyTuning | None, where: str) -> Policy:
    """One plan's detection policy: the gateway-wide settings with the plan's overrides."""
    values = base.model_dump()
    if plan is not None:
        values.update({k: v for k, v in plan.model_dump().items() if v is not None})
    fields = {f.name for f in dataclasses.fields(Policy)}
    plain = {k: v for k, v in values.items() if k in fields}
    return Policy(
        **plain,
        min_spend_per_hour=parse_usd(
            values["min_spend_usd_per_hour"], field=f"{where}.min_spend_usd_per_hour"
        ),
        floor_spend_per_hour=parse_usd(
            values["floor_spend_usd_per_hour"], field=f"{where}.floor_spend_usd_per_hour"
        ),
    )
