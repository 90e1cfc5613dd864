"""The sections of farebox.yaml for seeing the gateway: ``metrics:``, ``logging:``,
``tracing:`` and ``dashboard:``, and each plan's ``observe:`` (what a plan allows traces to
record). Validated here; secrets (``env:NAME``) are resolved by ``farebox.config.settings``,
which alone reads the environment."""

from __future__ import annotations

import urllib.parse
from typing import Literal

from pydantic import Field, field_validator

from farebox.config.base import EnvReference, Strict


class MetricsConfig(Strict):
    """``GET /metrics`` (Prometheus text format)."""

    enabled: bool = True
    token: EnvReference | None = None  # a bearer token the scraper must send; unset: open
    tenant_labels: bool = False  # a tenant label on per-request series (cardinality!)


class LoggingConfig(Strict):
    """One access-log line per request (never a secret, never content)."""

    access_log: bool = True
    format: Literal["auto", "json", "text"] = "auto"  # auto: text on a terminal, else JSON


class TracingConfig(Strict):
    """OpenTelemetry traces over OTLP/HTTP (the ``farebox[otel]`` extra)."""

    enabled: bool = False
    endpoint: str | None = None  # e.g. http://127.0.0.1:4318/v1/traces
    service_name: str = "farebox"
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    stages: bool = True  # a span per stage (authenticate, route, admit, settle); false: fewer spans


class DashboardConfig(Strict):
    """The dashboard served at ``/dashboard``."""

    enabled: bool = True
    session_ttl_s: int = Field(8 * 3600, ge=60)
    # how long a worker trusts its check of a session; a revocation made on another worker or
    # replica (or a tenant key revoked) takes effect within it. 0: check the store every time
    session_check_cache_s: float = Field(5.0, ge=0.0, le=300.0)
    # the session cookie's Secure flag. auto: when the request came over TLS, as the server saw
    # it or as a trusted proxy (server.trusted_proxies) said in X-Forwarded-Proto
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    # origins (scheme://host[:port]) a sign-in or form may come from besides the Host itself:
    # the public address when a reverse proxy rewrites Host
    allowed_origins: list[str] = Field(default_factory=list)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            parts = urllib.parse.urlsplit(value.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"allowed_origins: {value!r} is not scheme://host[:port]")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"allowed_origins: {value!r} has more than an origin")
            out.append(f"{parts.scheme}://{parts.netloc}".lower())
        return out


class PlanObserve(Strict):
    """What a plan allows the traces to record: prompt and completion text only if told."""

    record_content: bool = False
