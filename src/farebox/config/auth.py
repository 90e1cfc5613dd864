"""The ``auth:`` section of farebox.yaml: who a data-plane caller is, besides a Farebox key.

``auth.jwt``: callers present a JWT their own identity provider issued; its tenant, user and
workspace claims say who they are (``farebox.identity.jwt``). ``auth.subdomain``: the host a
request came in on names its tenant (``farebox.identity.subdomain``).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, field_validator, model_validator

from farebox.config.base import HttpURL, Strict

# The asymmetric algorithms a JWT may be signed with. HMAC (HS*) is refused: a shared secret
# would let anyone who can verify a token also mint one, and a verifier that accepted HS* could
# be fooled into using a public key as the HMAC secret.
Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
ALLOWED: tuple[str, ...] = get_args(Algorithm)
CLAIM = r"^[A-Za-z0-9_:/.\-]{1,128}$"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN = rf"^{_LABEL}(\.{_LABEL})+$"


class AutoCreate(Strict):
    """``auth.jwt.auto_create_tenants``: a valid token naming an unknown tenant creates it."""

    plan: str = Field(min_length=1)


class JwtConfig(Strict):
    """``auth.jwt``. Give exactly one of ``jwks_url`` (fetched through the gateway's one HTTP
    client, cached, re-fetched when an unknown ``kid`` appears at most every
    ``jwks_refetch_s``, and when older than ``jwks_max_age_s``) or ``public_key_file`` (a PEM
    public key read at start-up)."""

    jwks_url: HttpURL | None = None
    public_key_file: str | None = Field(None, min_length=1)
    issuer: str = Field(min_length=1)
    audience: str | list[str] = Field(min_length=1)
    tenant_claim: str = Field("tenant", pattern=CLAIM)
    user_claim: str | None = Field(None, pattern=CLAIM)
    workspace_claim: str | None = Field(None, pattern=CLAIM)
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS), min_length=1)
    leeway_s: float = Field(0.0, ge=0, le=3600)
    auto_create_tenants: AutoCreate | None = None
    max_token_bytes: int = Field(8192, ge=256, le=65536)
    jwks_refetch_s: float = Field(30.0, ge=1, le=86400)
    # the key set is re-fetched when older than this, so a key the identity provider removed
    # stops being trusted (and the tokens it signed with it are verified again)
    jwks_max_age_s: float = Field(300.0, ge=1, le=86400)
    jwks_timeout_s: float = Field(5.0, gt=0, le=60)
    cache_size: int = Field(4096, ge=0, le=1_000_000)  # verified tokens kept until their exp

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        allowed = ", ".join(ALLOWED)
        for name in value:
            if name.upper().startswith("HS"):
                raise ValueError(
                    f"{name} is an HMAC (shared-secret) algorithm and is refused; "
                    f"use one of {allowed}"
                )
            if name not in ALLOWED:
                raise ValueError(f"unsupported algorithm {name!r}; use one of {allowed}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtConfig:
        if (self.jwks_url is None) == (self.public_key_file is None):
            raise ValueError("give exactly one of jwks_url or public_key_file")
        return self


class SubdomainConfig(Strict):
    """``auth.subdomain``: ``acme.<base_domain>`` names tenant ``acme``."""

    base_domain: str = Field(pattern=DOMAIN)

    @field_validator("base_domain")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class AuthConfig(Strict):
    """The top-level ``auth:`` section; both parts are off unless configured."""

    jwt: JwtConfig | None = None
    subdomain: SubdomainConfig | None = None


# Headers a provider adapter writes itself, or that frame the request: never a forward header.
_RESERVED_HEADERS = frozenset(
    {
        "authorization", "x-api-key", "api-key", "host", "content-type", "content-length",
        "transfer-encoding", "connection", "accept", "anthropic-version", "traceparent",
        "tracestate", "cookie",
    }
)  # fmt: skip


def header_name(value: str) -> str:
    """A header name a provider forwards the caller's tenant, user or workspace in."""
    if value.lower() in _RESERVED_HEADERS:
        raise ValueError(f"{value!r} is a header the gateway writes itself; pick another name")
    return value


# ``providers.NAME.forward_tenant_header`` and friends: a header name (``X-Tenant-ID``).
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$"), AfterValidator(header_name)]
