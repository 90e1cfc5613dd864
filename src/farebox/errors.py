"""The one error tree. Each class knows its HTTP status and OpenAI error type and code.

Errors are rendered once, at the API edge (``farebox.api.errors``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class FareboxError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.error_code = code if code is not None else self.code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class ConfigError(FareboxError):
    """A bad configuration; stops start-up. Never rendered over HTTP."""

    status = 500
    type = "config_error"


class InvalidRequest(FareboxError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InputTooLarge(InvalidRequest):
    code = "input_too_large"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class HeadersTooLarge(InvalidRequest):
    """Too many header fields, or too many bytes of them (``server.max_header_*``)."""

    status = 431
    code = "request_headers_too_large"


class MethodNotAllowed(InvalidRequest):
    """The path exists but not for this method; ``headers`` carries ``Allow``."""

    status = 405
    code = "method_not_allowed"


class MissingTenant(InvalidRequest):
    code = "missing_tenant"


class AuthenticationError(FareboxError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(FareboxError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class ToolDenied(PermissionDenied):
    code = "tool_denied"


class ToolRequiresApproval(PermissionDenied):
    code = "tool_requires_approval"


class TenantPaused(PermissionDenied):
    code = "tenant_paused"


class KeyPaused(PermissionDenied):
    code = "key_paused"


class NotFound(FareboxError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(FareboxError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimited(FareboxError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class NoDeployment(FareboxError):
    """Every deployment of a model is skipped: their circuit breakers are open."""

    status = 503
    type = "api_error"
    code = "deployments_unavailable"


class UpstreamRateLimited(RateLimited):
    """Every deployment answered 429 and retrying would outlast the request: the client gets
    a 429 with the upstream's ``Retry-After``, so its SDK waits and retries."""

    code = "upstream_rate_limited"


class LimiterUnavailable(FareboxError):
    """The shared counters (Redis) cannot be reached: refuse rather than admit unchecked."""

    status = 503
    type = "api_error"
    code = "limiter_unavailable"


class BudgetExceeded(RateLimited):
    type = "insufficient_quota"
    code = "budget_exceeded"


class InsufficientCredits(RateLimited):
    """A prepaid tenant's credit balance cannot cover the request's worst case."""

    type = "insufficient_quota"
    code = "insufficient_credits"


class UpstreamError(FareboxError):
    """The upstream provider failed. ``upstream_status`` is what it answered (0: no answer)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int = 0,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.upstream_status = upstream_status
        self.retry_after = retry_after  # seconds the upstream asked us to wait, if it did

    @property
    def retryable(self) -> bool:
        return (
            self.upstream_status == 0
            or self.upstream_status in (408, 409, 429, 529)
            or (self.upstream_status >= 500)
        )


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamRejected(UpstreamError):
    """The upstream refused the request as the client's own error (4xx); passed through."""

    type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(self, message: str, *, upstream_status: int, **kwargs: Any) -> None:
        super().__init__(message, upstream_status=upstream_status, **kwargs)
        self.status_override = upstream_status


class ServiceUnavailable(FareboxError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class LedgerUnavailable(ServiceUnavailable):
    """The ledger's database cannot be reached: the request is refused before any upstream
    call, so no spend goes out unrecorded. Nothing was billed."""

    code = "ledger_unavailable"


class CacheUnavailable(ServiceUnavailable):
    """The response cache's backend (Redis) failed. Never reaches a client: the cache stage
    treats it as a miss (a warning, ``farebox_cache_events_total{event="error"}``)."""

    code = "cache_unavailable"


class EmbedderUnavailable(ConfigError):
    """The semantic cache's embedder cannot be loaded (the ``farebox[semantic]`` extra is
    missing, or its model file): a start-up error naming what to install."""


class UpstreamTranslationFailed(FareboxError):
    """A bug in a provider adapter or a translator: answered 502 (SDKs do not retry it as they
    would a 503), logged once with the request id, and its holds released. Nothing was billed."""

    status = 502
    type = "api_error"
    code = "upstream_translation_failed"


def openai_error_body(exc: FareboxError) -> dict[str, Any]:
    """The OpenAI error object: ``{"error": {"message", "type", "param", "code", ...}}``."""
    error: dict[str, Any] = {
        "message": exc.message,
        "type": exc.type,
        "param": exc.param,
        "code": exc.error_code,
    }
    error.update(exc.extra)
    return {"error": error}


def http_status(error: FareboxError) -> int:
    override = getattr(error, "status_override", None)
    return int(override) if override else error.status


class TokenExpired(AuthenticationError):
    """A JWT past its ``exp`` (beyond ``auth.jwt.leeway_s``)."""

    code = "token_expired"


class TokenNotYetValid(AuthenticationError):
    """A JWT before its ``nbf`` (or issued in the future), beyond the leeway."""

    code = "token_not_yet_valid"


class TokenInvalidIssuer(AuthenticationError):
    code = "token_invalid_issuer"


class TokenInvalidAudience(AuthenticationError):
    code = "token_invalid_audience"


class TokenUnsupportedAlgorithm(AuthenticationError):
    """``alg`` is not one of ``auth.jwt.algorithms`` (``none`` and HS* never are), or does not
    fit the type of the key it names."""

    code = "token_unsupported_algorithm"


class TokenUnknownKid(AuthenticationError):
    """No signing key with the token's ``kid``, even after re-fetching the JWKS."""

    code = "token_unknown_kid"


class TokenInvalidSignature(AuthenticationError):
    code = "token_invalid_signature"


class TokenMalformed(AuthenticationError):
    """Not a well-formed JWT, too large (``auth.jwt.max_token_bytes``), or a claim of the
    wrong type."""

    code = "token_malformed"


class TokenMissingClaim(AuthenticationError):
    """A claim the gateway needs (``exp``, the tenant claim) is absent."""

    code = "token_missing_claim"


class UnknownTenant(AuthenticationError):
    """A valid JWT whose tenant claim names no tenant (and tenants are not auto-created)."""

    code = "unknown_tenant"


class TenantHostMismatch(PermissionDenied):
    """The request's host (``auth.subdomain``) names another tenant than its credential."""

    code = "tenant_host_mismatch"


# issue 14: the provider-credential vault ------------------------------------------------
class VaultError(ConfigError):
    """The credential vault cannot seal or open a credential: ``cryptography`` is missing
    (the ``farebox[identity]`` extra), no key-encryption key can open a ciphertext, or a row
    was tampered with. Its message never holds a secret."""

    code = "vault_error"


class ProviderCredentialMissing(UpstreamError):
    """A deployment's provider takes its key from the vault (``integration:NAME``) and the
    vault has no such credential: answered 503 after failing over to any other deployment."""

    status = 503
    code = "provider_credential_missing"


class InsufficientRole(PermissionDenied):
    """An admin key whose role lacks what the operation needs (the message names the role
    that has it); a ``tenant_admin`` outside its tenant is answered 404 instead."""

    code = "insufficient_role"


class TokenUnknownWorkspace(AuthenticationError):
    """A valid JWT whose workspace claim names a workspace its tenant does not have (an
    invented name would otherwise escape that workspace's budgets and limits)."""

    code = "token_unknown_workspace"


class JwtScope(PermissionDenied):
    """A JWT caller (an end user) asked for a tenant-wide view: ``/v1/graphql``, or
    ``/v1/me/requests`` without a user claim to scope it to."""

    code = "jwt_scope"


class VaultUnavailable(VaultError):
    """The credential vault is needed and ``cryptography`` (the ``farebox[identity]`` extra)
    is not installed: a start-up error when a provider names ``integration:...``, else
    answered 501 ``vault_unavailable`` by the integrations routes and by a request whose
    key is in the vault. A base install without the extra starts and serves otherwise."""

    status = 501
    type = "api_error"
    code = "vault_unavailable"


class GuardrailBlocked(InvalidRequest):
    """A guardrail refused the request (issue 15): it is never forwarded, billed or cached.
    The message and ``extra`` name the detector and the category, never the matched text."""

    code = "guardrail_blocked"


class PromptInjectionDetected(GuardrailBlocked):
    code = "prompt_injection_detected"


class PiiDetected(GuardrailBlocked):
    code = "pii_detected"


class SecretDetected(GuardrailBlocked):
    code = "secret_detected"


class AbuseDetected(GuardrailBlocked):
    """Prompt stuffing, a batch burst or context exploitation (``guardrails.abuse``)."""

    code = "abuse_detected"


class GuardrailScanLimit(GuardrailBlocked):
    """A request's texts exceed its plan's ``guardrails.max_scan_chars``, and a check in
    block or redact mode cannot vouch for text it did not read: refused, never forwarded."""

    code = "guardrail_scan_limit"


class GuardrailTimeout(GuardrailBlocked):
    """A check in block or redact mode did not finish within its plan's timeout (presidio's
    ``pii.timeout_ms``): refused, never forwarded unchecked."""

    code = "guardrail_timeout"


class GuardrailUnavailable(ConfigError):
    """A plan asks for a guardrail whose extra is not installed (``farebox[pii]``,
    ``farebox[guard-model]``): stops start-up, naming the extra."""

    code = "guardrail_unavailable"
