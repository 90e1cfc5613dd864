"""The one typed settings object. Only this module reads the environment.

``load_settings`` validates ``farebox.yaml`` and stops start-up with a message that names
the file, the key and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from farebox.catalog import load_catalog
from farebox.config.anomaly import AnomalySettings, AnomalyTuning, policy
from farebox.config.audit import AuditSettings
from farebox.config.auth import AuthConfig, HeaderName
from farebox.config.base import Decimal, EnvReference, HttpURL, Strict
from farebox.config.billing_webhooks import BillingWebhooks, hook_secrets
from farebox.config.cache import CacheSettings, PlanCache
from farebox.config.guardrail_model import GuardModelSettings
from farebox.config.guardrails import GuardrailsConfig
from farebox.config.integrations import (
    KEK_ENV,
    ProviderKey,
    check_dual,
    integration_of,
    parse_kek,
    secret_field,
)
from farebox.config.limits import ResponsesSettings, TimeoutSettings
from farebox.config.observe import (
    DashboardConfig,
    LoggingConfig,
    MetricsConfig,
    PlanObserve,
    TracingConfig,
)
from farebox.config.pricing import PlanPricing, check_pricing
from farebox.config.reconcile import ReconcileConfig, admin_keys
from farebox.config.stores import RedisSettings, redis_target
from farebox.core.meters import METERS, Meter
from farebox.core.money import MoneyFormatError, parse_usd, price_per_token
from farebox.core.periods import parse_period
from farebox.errors import ConfigError


class PriceOverride(Strict):
    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None

    def fields(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class OutputLength(Strict):
    distribution: Literal["fixed", "uniform", "lognormal"] = "lognormal"
    mean: int = Field(120, ge=1)
    min: int = Field(1, ge=1)
    max: int = Field(1024, ge=1)


class ProviderConfig(Strict):
    kind: Literal["openai", "anthropic", "mock"]
    base_url: HttpURL | None = None
    api_key: ProviderKey | None = None  # env:NAME, or integration:NAME (the vault)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(600.0, gt=0)
    # /v1/responses: sent on as it came (kind openai only), or translated to chat completions
    responses: Literal["native", "translate"] = "translate"
    seed: int = 0  # the mock's options, from here on
    latency_ms: float = Field(0.0, ge=0)
    ttft_ms: float = Field(0.0, ge=0)
    tokens_per_second: float = Field(0.0, ge=0)
    output_tokens: OutputLength = Field(default_factory=OutputLength)
    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(500, ge=400, le=599)
    error_statuses: list[int] = Field(default_factory=list)  # one picked at random per error
    spike_rate: float = Field(0.0, ge=0, le=1)  # share of calls delayed by spike_ms more
    spike_ms: float = Field(0.0, ge=0)
    rate_limit_rate: float = Field(0.0, ge=0, le=1)  # share of calls answered 429
    retry_after_s: float = Field(1.0, ge=0)  # the Retry-After of those 429s
    disconnect_rate: float = Field(0.0, ge=0, le=1)  # share of streams cut mid-way
    disconnect_after: int = Field(3, ge=1)  # chunks sent before the cut
    # headers that carry the caller's tenant, user and workspace upstream (X-Tenant-ID), for
    # self-hosted model servers; None (the default): not sent
    forward_tenant_header: HeaderName | None = None
    forward_user_header: HeaderName | None = None
    forward_workspace_header: HeaderName | None = None


class Deployment(Strict):
    provider: str
    model: str
    weight: int = Field(1, ge=0)
    price: PriceOverride | None = None
    context_window: int | None = Field(None, ge=1)  # tokens (issue 15: context exploitation)


class BudgetConfig(Strict):
    """A budget object, as in CONTRACT: in plans, tenant and key overrides, and the admin API."""

    scope: Literal["tenant", "key", "feature", "user", "global", "workspace"] = "tenant"
    period: str = "month"
    limit_usd: Decimal | None = None
    weight: Decimal | None = None  # feature budgets: a share of the tenant budget
    name: str | None = Field(None, max_length=256)
    rollover_cap_usd: Decimal | None = None
    increase_usd: Decimal | None = None  # a temporary increase...
    increase_until: float | None = Field(None, allow_inf_nan=False)  # ...until (unix seconds)
    basis: Literal["cost", "revenue"] = "cost"  # what the provider costs, or what is charged

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        parse_period(value)
        return value

    @model_validator(mode="after")
    def _limit_or_weight(self) -> BudgetConfig:
        if (self.limit_usd is None) == (self.weight is None):
            raise ValueError("give exactly one of limit_usd or weight")
        if self.weight is not None and self.scope != "feature":
            raise ValueError("weight is only for feature budgets")
        return self


class BreakerSettings(Strict):
    """One circuit breaker per deployment. It opens after ``failures`` retryable failures in a
    row, or when at least ``min_requests`` calls in ``window_s`` failed at ``failure_rate`` or
    more; it stays open ``cooldown_s``, then lets one probe through (half-open)."""

    failures: int = Field(5, ge=1)
    failure_rate: float | None = Field(None, gt=0, le=1)
    min_requests: int = Field(10, ge=1)
    window_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(30.0, gt=0)
    sync_s: float = Field(1.0, gt=0)  # how often open breakers are read from the shared store


class RoutingSettings(Strict):
    retries: int = Field(1, ge=0, le=10)  # extra rounds over the deployments after the first
    backoff_s: float = Field(0.05, ge=0)  # base of the jittered exponential backoff
    max_backoff_s: float = Field(2.0, ge=0)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)


class BudgetSettings(Strict):
    timezone: str = "UTC"
    lease_s: float = Field(120.0, gt=0)
    downgrade_below: Decimal = "0.10"  # share of a budget left that triggers downgrade
    min_output_tokens: int = Field(16, ge=1)  # clamp max_tokens no lower than this
    default_max_tokens: int = Field(4096, ge=1)  # when the client and plan set none
    # a request that would fit once in-flight requests settle waits this long, not a 429
    wait_for_room_s: float = Field(10.0, ge=0)
    alert_thresholds: list[int] = Field(default_factory=lambda: [50, 80, 100])
    alert_webhook_url: str | None = None
    alert_webhook_secret: EnvReference | None = None
    global_budgets: list[BudgetConfig] = Field(default_factory=list, alias="global")
    # scaled mode: each replica takes this many seconds of its spend of a global budget from
    # Redis at a time (stores.redis.allowance); 0: every request holds it in Redis
    global_lease_s: float = Field(1.0, ge=0, le=60)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (expected e.g. UTC, Europe/Paris)"
            ) from None
        return value


class RateLimitConfig(Strict):
    scope: Literal["key", "tenant", "user", "ip", "workspace"] = "key"
    requests_per_minute: int | None = Field(None, ge=0)
    tokens_per_minute: int | None = Field(None, ge=0)
    concurrent: int | None = Field(None, ge=0)
    model: str | None = Field(None, min_length=1, max_length=200)  # a glob on the model asked for
    window_s: int = Field(60, ge=1, le=3600)  # the per-minute counts' window (a test's: short)
    # a plan's scope ip limits only (issue 15): one client IP counted once across every tenant
    across_tenants: bool = False  # (refused in tenant, workspace and key overrides)


class ToolPolicyConfig(Strict):
    """Glob patterns on tool and function names (``database.delete*``)."""

    deny: list[str] = Field(default_factory=list)
    allow: list[str] = Field(default_factory=list)  # when set, every other tool is denied
    require_approval: list[str] = Field(default_factory=list)


class PlanConfig(Strict):
    models: list[str] = Field(default_factory=lambda: ["*"])
    budgets: list[BudgetConfig] = Field(default_factory=list)
    rate_limits: list[RateLimitConfig] = Field(default_factory=list)
    max_tokens: int | None = Field(None, ge=1)
    max_tokens_policy: Literal["clamp", "reject"] = "clamp"
    max_input_chars: int | None = Field(None, ge=1)
    max_input_tokens: int | None = Field(None, ge=1)
    tools: ToolPolicyConfig = Field(default_factory=ToolPolicyConfig)
    timeout_s: float | None = Field(None, gt=0)
    downgrade: dict[str, str] = Field(default_factory=dict)
    pricing: PlanPricing = Field(default_factory=PlanPricing)
    anomaly: AnomalyTuning | None = None
    observe: PlanObserve = Field(default_factory=PlanObserve)
    cache: PlanCache = Field(default_factory=PlanCache)
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)  # issue 15


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # data plane and admin API alike
    max_header_count: int = Field(100, ge=16, le=10_000)  # header fields per request -> 431
    max_header_bytes: int = Field(16 * 1024, ge=1024)  # bytes of header names and values -> 431
    max_json_depth: int = Field(64, ge=4, le=1000)  # nesting of arrays/objects in a body -> 400
    docs: bool = False  # serve Swagger UI at /docs (behind the admin key)
    docs_assets_url: str | None = None  # where swagger-ui-bundle.js and swagger-ui.css live
    trusted_proxies: list[str] = Field(default_factory=list)  # IPs or CIDRs allowed to set XFF
    upgrade_url: str | None = None
    key_cache_size: int = Field(10_000, ge=0)
    reload_interval_s: float = Field(2.0, ge=0)  # how often plans are re-read; 0: never
    # SQLite only: this one process is the database's only user, so budget and rate-limit
    # counters live in its memory (reservations journalled to a file); see stores/sqlite/single.py.
    # Unset (auto): `farebox serve` and `farebox demo` pick it for one worker on a database no
    # other farebox process uses, and the shared mode otherwise (cli/serve.py ``choose_mode``);
    # true: always (a start-up error when it cannot be); false: always the shared mode.
    single_process: bool | None = None


class SinkConfig(Strict):
    """One billing sink: where the ledger's usage goes, and as which meters."""

    kind: Literal["stripe", "lago", "metronome", "openmeter", "webhook", "redis_stream"]
    base_url: str  # for redis_stream: redis://HOST:6379/0
    stream: str = "farebox:usage"  # redis_stream only: the stream to XADD to
    # Stripe only: v1 meter events (one per call), or the v2 stream (batches of 100, with a
    # session token from base_url, events to stream_url, e.g. https://meter-events.stripe.com)
    api: Literal["v1", "v2"] = "v1"
    stream_url: str | None = None
    api_key: EnvReference | None = None  # sent as a bearer token
    secret: EnvReference | None = None  # webhook signing secret
    meters: list[Meter] = Field(default_factory=lambda: list(METERS))
    names: dict[str, str] = Field(default_factory=dict)  # meter -> the sink's event name / code
    granularity: Literal["request", "hour"] = "request"
    timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(6, ge=1, le=50)  # per batch, before the exporter pauses the sink


class BillingConfig(Strict):
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    interval_s: float = Field(5.0, gt=0)  # how often each sink looks for new ledger entries
    batch: int = Field(500, ge=1, le=10_000)  # ledger entries read per round
    hour_grace_s: float = Field(600.0, ge=0)  # hourly aggregates wait this long after the hour
    in_serve: bool = True  # run the exporter inside farebox serve
    webhooks: BillingWebhooks = Field(default_factory=BillingWebhooks)  # inbound grants


class LedgerConfig(Strict):
    synchronous: Literal["normal", "full"] = "normal"
    batch_max: int = Field(512, ge=1)
    # SQLite: the bound the write-ahead log stays under (it is checkpointed and cut back
    # once it passes a quarter of this), and how long a checkpoint may hold writes back
    wal_max_mb: int = Field(64, ge=4, le=1 << 20)
    checkpoint_wait_ms: int = Field(100, ge=1, le=10_000)


class FileConfig(Strict):
    database: str = "sqlite:///farebox.db"
    redis: RedisSettings | None = None  # a URL, or {url: ..., cluster: true}
    # namespaces this deployment's Redis keys; unset: one derived from the database
    redis_prefix: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    secret: EnvReference | None = None
    server: ServerConfig = Field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, list[Deployment]] = Field(default_factory=dict)
    pricing: dict[str, PriceOverride] = Field(default_factory=dict)
    plans: dict[str, PlanConfig] = Field(default_factory=dict)
    default_plan: str | None = None
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    anomaly: AnomalySettings = Field(default_factory=AnomalySettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    upgrade_url: str | None = None
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    audit: AuditSettings = Field(default_factory=AuditSettings)  # issue 14: the audit trail
    auth: AuthConfig = Field(default_factory=AuthConfig)  # JWT and subdomain tenants
    guard_model: GuardModelSettings = Field(default_factory=GuardModelSettings)  # issue 15


class Settings(BaseModel):
    """Validated configuration plus what came from the environment."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    file: FileConfig
    source: str
    database_path: Path | None
    database_url: str
    redis_url: str | None = None
    redis_cluster: bool = False  # redis_url names one node of a Redis Cluster
    secret: bytes | None
    admin_key: str | None
    provider_keys: dict[str, str | None]
    alert_secret: bytes | None = None
    sink_secrets: dict[str, str] = Field(default_factory=dict)  # "<sink>.<field>" -> value
    paging_secrets: dict[str, str] = Field(default_factory=dict)  # "pagerduty" / "slack"
    metrics_token: str | None = None  # the bearer token GET /metrics asks for (metrics.token)
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR: set by serve --workers N
    reconcile_keys: Mapping[str, str] = Field(default_factory=dict)  # provider -> admin key
    # issue 14, the vault: provider -> credential name (api_key: integration:NAME), and the
    # key-encryption keys from FAREBOX_KEK, current first (none: derived from the secret)
    provider_integrations: Mapping[str, str] = Field(default_factory=dict)
    kek: tuple[tuple[str, bytes], ...] = ()


DEFAULT_PLAN = PlanConfig(models=["*"])


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _format_validation(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        key = _where(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            shown = "" if secret_field(err["loc"]) else f" (got {err.get('input')!r})"
            lines.append(f"  {key}: {err['msg']}{shown}")
    return "\n".join(lines)


def _resolve_env(
    reference: str | None, where: str, source: str, env: Mapping[str, str]
) -> str | None:
    if reference is None:
        return None
    name = reference[len("env:") :]
    value = env.get(name)
    if not value:
        raise ConfigError(f"{source}: {where}: environment variable {name} is not set")
    return value


def _check_money(source: str, cfg: FileConfig) -> None:
    """Every price and amount must be exact."""
    try:
        for name, override in cfg.pricing.items():
            for field, value in override.fields().items():
                price_per_token(value, field=f"pricing.{name}.{field}")
        for alias, deployments in cfg.models.items():
            for i, dep in enumerate(deployments):
                for field, value in (dep.price.fields() if dep.price else {}).items():
                    price_per_token(value, field=f"models.{alias}.{i}.price.{field}")
        for plan_name, plan in cfg.plans.items():
            for j, budget in enumerate(plan.budgets):
                if budget.limit_usd is not None:
                    parse_usd(budget.limit_usd, field=f"plans.{plan_name}.budgets.{j}.limit_usd")
            check_pricing(plan_name, plan.pricing)
        policy(cfg.anomaly, None, "anomaly")
        for plan_name, plan in cfg.plans.items():
            policy(cfg.anomaly, plan.anomaly, f"plans.{plan_name}.anomaly")
    except MoneyFormatError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _check_references(source: str, cfg: FileConfig) -> None:
    for name, provider in cfg.providers.items():
        if provider.responses == "native" and provider.kind != "openai":
            raise ConfigError(f"{source}: providers.{name}.responses: 'native' needs kind "
                              f"'openai' (this provider is {provider.kind!r})")  # fmt: skip
    for alias, deployments in cfg.models.items():
        if not deployments:
            raise ConfigError(f"{source}: models.{alias}: expected at least one deployment")
        for i, dep in enumerate(deployments):
            if dep.provider not in cfg.providers and not (
                dep.provider == "mock" and not cfg.providers
            ):
                known = ", ".join(sorted(cfg.providers)) or "(none)"
                raise ConfigError(
                    f"{source}: models.{alias}.{i}.provider: unknown provider "
                    f"{dep.provider!r}; configured providers: {known}"
                )
    for name, plan in cfg.plans.items():
        if plan.pricing.markup is not None and plan.pricing.resale is not None:
            raise ConfigError(f"{source}: plans.{name}.pricing: give markup or resale, not both")
    if cfg.default_plan is not None and cfg.default_plan not in cfg.plans:
        raise ConfigError(f"{source}: default_plan: unknown plan {cfg.default_plan!r}")


def _check_prices(source: str, cfg: FileConfig) -> None:
    """Every deployment needs a price: from the catalog, ``pricing:`` or its own ``price``."""
    catalog = load_catalog()
    for alias, deployments in cfg.models.items():
        for i, dep in enumerate(deployments):
            own = dep.price.fields() if dep.price else {}
            global_override = cfg.pricing.get(dep.model)
            priced = (
                catalog.get(dep.model) is not None
                or "input" in own
                or (global_override is not None and global_override.input is not None)
            )
            if not priced:
                raise ConfigError(
                    f"{source}: models.{alias}.{i}.model: {dep.model!r} is not in the price "
                    f"catalog ({catalog.date}); give it a price, "
                    'e.g. price: {input: "0.50", output: "1.50"}'
                )


def _database(source: str, url: str, base: Path) -> tuple[str, Path | None]:
    if url.startswith("sqlite:///"):
        raw = Path(url[len("sqlite:///") :])
        path = raw if raw.is_absolute() else (base / raw)
        return url, path
    if url == "memory":
        return url, None
    if url.startswith(("postgresql://", "postgres://")):
        return url, None
    raise ConfigError(f"{source}: database: expected 'sqlite:///PATH' (got {url!r})")


def secret_present(cfg: FileConfig, env: Mapping[str, str]) -> bool:
    named = cfg.secret[len("env:") :] if cfg.secret else None
    return bool((named and env.get(named)) or env.get("FAREBOX_SECRET"))


def _file_config(data: object, source: str) -> FileConfig:
    """The document validated and checked: exact money, known references, a price for all."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        cfg = FileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(source, exc)) from None
    _check_money(source, cfg)
    _check_references(source, cfg)
    _check_prices(source, cfg)
    return cfg


def _stores(
    source: str, cfg: FileConfig, env: Mapping[str, str], base_dir: Path
) -> tuple[str, Path | None, str | None, bool]:
    """The database URL, its file (SQLite), the Redis URL and whether that is a cluster
    node; PostgreSQL needs Redis and a shared secret."""
    db_env = env.get("FAREBOX_DATABASE")
    url, path = _database(source, db_env or cfg.database, base_dir)
    redis_url, redis_cluster = redis_target(source, cfg.redis, env)
    if url.startswith("postgres") and not redis_url:
        raise ConfigError(
            f"{source}: redis: a PostgreSQL database needs Redis for budget counters and "
            'shared state; set redis: "redis://HOST:6379/0"'
        )
    if url.startswith("postgres") and not secret_present(cfg, env):
        raise ConfigError(
            f"{source}: secret: replicas must share the key-hashing secret; set FAREBOX_SECRET "
            '(the same value on every replica) or secret: "env:NAME"'
        )
    return url, path, redis_url, redis_cluster


def _sink_secrets(source: str, cfg: FileConfig, env: Mapping[str, str]) -> dict[str, str]:
    """``"<sink>.<field>"`` -> the value of each billing sink's ``env:`` secret."""
    sink_secrets = {
        f"{name}.{field}": _resolve_env(getattr(s, field), f"billing.sinks.{name}.{field}",
                                        source, env)
        for name, s in cfg.billing.sinks.items()
        for field in ("api_key", "secret")
        if getattr(s, field) is not None
    }  # fmt: skip
    return {k: v for k, v in sink_secrets.items() if v}


def _paging_secrets(source: str, cfg: FileConfig, env: Mapping[str, str]) -> dict[str, str]:
    """The PagerDuty routing key and the Slack webhook URL, where configured."""
    paging = {
        "pagerduty": _resolve_env(pd.routing_key, "anomaly.pagerduty.routing_key", source, env)
        if (pd := cfg.anomaly.pagerduty)
        else None,
        "slack": _resolve_env(sl.webhook_url, "anomaly.slack.webhook_url", source, env)
        if (sl := cfg.anomaly.slack)
        else None,
    }
    return {k: v for k, v in paging.items() if v}


def parse_settings(
    data: object, *, source: str, env: Mapping[str, str], base_dir: Path
) -> Settings:
    """Validate an already-parsed YAML document."""
    cfg = _file_config(data, source)
    url, path, redis_url, redis_cluster = _stores(source, cfg, env, base_dir)
    keys = {
        name: None if integration_of(p.api_key) else
        _resolve_env(p.api_key, f"providers.{name}.api_key", source, env)
        for name, p in cfg.providers.items()
    }  # fmt: skip
    for name, p in cfg.providers.items():
        check_dual(source, name, p.api_key, p.headers)
    secret = _resolve_env(cfg.secret, "secret", source, env) or env.get("FAREBOX_SECRET")
    alert_secret = _resolve_env(
        cfg.budgets.alert_webhook_secret, "budgets.alert_webhook_secret", source, env
    )
    sink_secrets = _sink_secrets(source, cfg, env) | hook_secrets(source, cfg.billing.webhooks, env)
    return Settings(
        file=cfg,
        source=source,
        database_path=path,
        database_url=url,
        redis_url=redis_url,
        redis_cluster=redis_cluster,
        secret=secret.encode() if secret else None,
        admin_key=env.get("FAREBOX_ADMIN_KEY") or None,
        provider_keys=keys,
        alert_secret=alert_secret.encode() if alert_secret else None,
        sink_secrets=sink_secrets,
        paging_secrets=_paging_secrets(source, cfg, env),
        metrics_token=_resolve_env(cfg.metrics.token, "metrics.token", source, env),
        metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        reconcile_keys=admin_keys(cfg, source, lambda r, w: _resolve_env(r, w, source, env)),
        provider_integrations={
            n: i for n, p in cfg.providers.items() if (i := integration_of(p.api_key))
        },
        kek=parse_kek(source, env.get(KEK_ENV)),
    )


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load ``path`` (or the embedded default when None) and the environment."""
    environ = dict(os.environ) if env is None else dict(env)
    data: object = {}
    source = "(embedded default)"
    base_dir = Path.cwd()
    if path is not None:
        file = Path(path)
        source = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if overrides:
        data = {**(data if isinstance(data, dict) else {}), **overrides}
    return parse_settings(data, source=source, env=environ, base_dir=base_dir)


CONFIG_ENV = "FAREBOX_CONFIG"


def admin_key_from_env() -> str | None:
    """The admin key for CLI commands that call a running gateway (``--url``)."""
    return os.environ.get("FAREBOX_ADMIN_KEY") or None


def export_for_workers(config: str | None, overrides: Mapping[str, Any] | None) -> None:
    """Hand the config to ``serve --workers N`` worker processes, which re-read it."""
    if config:
        os.environ[CONFIG_ENV] = os.path.abspath(config)
    if overrides:
        os.environ["FAREBOX_OVERRIDES"] = yaml.safe_dump(dict(overrides))


def settings_from_env() -> Settings:
    """Settings for a worker process started by ``farebox serve --workers N``."""
    path = os.environ.get(CONFIG_ENV) or None
    overrides = os.environ.get("FAREBOX_OVERRIDES")
    return load_settings(path, overrides=yaml.safe_load(overrides) if overrides else None)
