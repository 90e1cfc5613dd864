"""JWT callers (``auth.jwt``): a bearer token their own identity provider signed names the
tenant, the end user and the workspace. Needs the ``farebox[identity]`` extra (PyJWT and
``cryptography``); loaded only when ``auth.jwt`` is configured.

A token is believed when all of these hold, else it is refused with a 401 whose ``code`` says
which failed (``farebox.errors``: ``token_*``):

* it is at most ``max_token_bytes`` and well formed (``token_malformed``);
* its header's ``alg`` is one of ``algorithms`` (asymmetric only: ``none`` and HS* never are)
  and fits the type and curve of the key its ``kid`` names (``token_unsupported_algorithm``),
  so a public key can never serve as an HMAC secret;
* that key is known, after at most one JWKS re-fetch (``token_unknown_kid``);
* the signature verifies with that key, for that algorithm only (``token_invalid_signature``);
* ``iss`` and ``aud`` are the configured ones; ``exp`` is present and not past, ``nbf`` and
  ``iat`` not in the future, each within ``leeway_s`` of the injected clock;
* the tenant claim is a tenant id (``token_missing_claim`` when absent), and the user claim,
  when ``user_claim`` is configured, is present (``token_missing_claim``).

A verified token's claims are kept (a bounded LRU keyed by a digest of the token) until its
``exp`` or until the key set changes (``jwks_max_age_s``), so a client repeating its token
pays one dict lookup per request, and a key the identity provider removed stops verifying.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import exceptions as jwt_errors

from farebox.config.auth import JwtConfig
from farebox.errors import (
    AuthenticationError,
    ConfigError,
    TokenExpired,
    TokenInvalidAudience,
    TokenInvalidIssuer,
    TokenInvalidSignature,
    TokenMalformed,
    TokenMissingClaim,
    TokenNotYetValid,
    TokenUnknownKid,
    TokenUnsupportedAlgorithm,
)
from farebox.identity.claims import Claims
from farebox.identity.jwks import JsonGetter, JwksCache, SigningKey
from farebox.identity.tenancy import TENANT_ID

MAX_CLAIM_CHARS = 256  # a user or workspace claim, as the X-Farebox-User header
_CURVES = {"ES256": ("P-256",), "ES384": ("P-384",), "ES512": ("P-521",),
           "EdDSA": ("Ed25519", "Ed448")}  # fmt: skip
_EC_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class KeySource(Protocol):
    async def key(self, kid: str | None) -> SigningKey | None: ...

    async def fresh(self) -> int:
        """Refresh the keys when they are old; their generation (it changes with them)."""
        ...


class StaticKey:
    """``public_key_file``: one key, whatever ``kid`` a token names."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    async def key(self, kid: str | None) -> SigningKey | None:
        return self._key

    async def fresh(self) -> int:
        return 0  # read once at start-up: never changes


def fits(alg: str, key: SigningKey) -> bool:
    """Whether a token signed with ``alg`` may be verified with ``key``."""
    if key.alg is not None and key.alg != alg:
        return False
    if alg[:2] in ("RS", "PS"):
        return key.kty == "RSA"
    if alg.startswith("ES"):
        return key.kty == "EC" and key.crv in _CURVES[alg]
    return alg == "EdDSA" and key.kty == "OKP" and key.crv in _CURVES[alg]


class JwtVerifier:
    """``verify(token) -> Claims``, or an ``AuthenticationError`` subclass naming why not."""

    def __init__(self, cfg: JwtConfig, keys: KeySource, clock: Callable[[], float]) -> None:
        self._cfg = cfg
        self._keys = keys
        self._clock = clock
        self._algorithms = frozenset(cfg.algorithms)
        self._audience = cfg.audience
        self._cache: OrderedDict[bytes, Claims] = OrderedDict()
        self._generation = 0  # of the key set the cached claims were verified under

    async def verify(self, token: str) -> Claims:
        if len(token) > self._cfg.max_token_bytes:
            raise TokenMalformed(f"The token is larger than {self._cfg.max_token_bytes} bytes.")
        generation = await self._keys.fresh()
        if generation != self._generation:  # keys came or went: verify every token again
            self._cache.clear()
            self._generation = generation
        digest = hashlib.blake2b(token.encode("utf-8", "surrogateescape"), digest_size=16)
        tag = digest.digest()
        hit = self._cache.get(tag)
        if hit is not None and self._clock() < hit.expires_at:
            self._cache.move_to_end(tag)
            return hit
        claims = await self._verify(token)
        if self._cfg.cache_size:
            self._cache[tag] = claims
            if len(self._cache) > self._cfg.cache_size:
                self._cache.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> Claims:
        alg, kid = _header(token, self._algorithms)
        key = await self._keys.key(kid)
        if key is None:
            raise TokenUnknownKid(
                "No signing key "
                + (f"with kid {kid[:64]!r}" if kid else "for this token")
                + " in the identity provider's key set."  # fmt: skip
            )
        if not fits(alg, key):
            raise TokenUnsupportedAlgorithm(
                f"The token's alg {alg} does not fit its signing key (a {key.kty} key)."
            )
        payload = self._decode(token, alg, key)
        self._check_times(payload)
        return self._claims(payload)

    def _decode(self, token: str, alg: str, key: SigningKey) -> dict[str, Any]:
        options: Any = {
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "require": ["exp"],
        }  # fmt: skip  (times: against the injected clock)
        try:
            return jwt.decode(token, key.key, algorithms=[alg], options=options,
                              audience=self._audience, issuer=self._cfg.issuer)  # fmt: skip
        except jwt_errors.PyJWTError as exc:
            raise _refusal(exc) from None

    def _check_times(self, payload: Mapping[str, Any]) -> None:
        now, leeway = self._clock(), self._cfg.leeway_s
        exp = _instant(payload, "exp")
        if exp is not None and now >= exp + leeway:
            raise TokenExpired("The token has expired.")
        for name in ("nbf", "iat"):
            at = _instant(payload, name)
            if at is not None and at > now + leeway:
                raise TokenNotYetValid(f"The token is not valid yet ({name} is in the future).")

    def _claims(self, payload: Mapping[str, Any]) -> Claims:
        cfg = self._cfg
        tenant = payload.get(cfg.tenant_claim)
        if tenant is None:
            raise TokenMissingClaim(f"The token has no {cfg.tenant_claim!r} claim (the tenant).")
        if not isinstance(tenant, str) or TENANT_ID.match(tenant) is None:
            raise TokenMalformed(f"The token's {cfg.tenant_claim!r} claim is not a tenant id.")
        user = _text_claim(payload, cfg.user_claim)
        if cfg.user_claim is not None and user is None:
            raise TokenMissingClaim(f"The token has no {cfg.user_claim!r} claim (the user).")
        exp = _instant(payload, "exp")
        return Claims(
            tenant,
            user,
            _text_claim(payload, cfg.workspace_claim),
            exp if exp is not None else math.inf,
        )


def _header(token: str, algorithms: frozenset[str]) -> tuple[str, str | None]:
    """The token's ``alg`` (one of ``algorithms``) and ``kid``."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt_errors.PyJWTError:
        raise TokenMalformed("The bearer token is not a well-formed JWT.") from None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in algorithms:
        shown = alg[:32] if isinstance(alg, str) else repr(alg)[:32]
        raise TokenUnsupportedAlgorithm(
            f"The token's alg {shown!r} is not accepted; accepted: {', '.join(sorted(algorithms))}."
        )
    if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
        raise TokenMalformed("The token's kid is not a string of at most 256 characters.")
    return alg, kid


def _refusal(exc: jwt_errors.PyJWTError) -> AuthenticationError:
    if isinstance(exc, jwt_errors.InvalidSignatureError):
        return TokenInvalidSignature("The token's signature does not verify.")
    if isinstance(exc, jwt_errors.InvalidAudienceError) or _missing(exc, "aud"):
        return TokenInvalidAudience("The token is not for this audience (aud).")
    if isinstance(exc, jwt_errors.InvalidIssuerError) or _missing(exc, "iss"):
        return TokenInvalidIssuer("The token is not from the configured issuer (iss).")
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return TokenMissingClaim(f"The token has no {exc.claim!r} claim.")
    if isinstance(exc, jwt_errors.InvalidAlgorithmError):
        return TokenUnsupportedAlgorithm("The token's algorithm is not accepted.")
    return TokenMalformed("The bearer token is not a well-formed JWT.")


def _missing(exc: jwt_errors.PyJWTError, claim: str) -> bool:
    return isinstance(exc, jwt_errors.MissingRequiredClaimError) and exc.claim == claim


def _instant(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    problem = TokenMalformed(f"The token's {name} claim is not a number of seconds.")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise problem
    try:
        seconds = float(value)  # JSON integers have no bound: 10**400 does not fit
    except OverflowError:
        raise problem from None
    if not math.isfinite(seconds):
        raise problem
    return seconds


def _text_claim(payload: Mapping[str, Any], name: str | None) -> str | None:
    if name is None:
        return None
    value = payload.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TokenMalformed(f"The token's {name!r} claim is not a string.")
    text = str(value)
    if len(text) > MAX_CLAIM_CHARS:
        raise TokenMalformed(f"The token's {name!r} claim is longer than {MAX_CLAIM_CHARS}.")
    return text


def pem_key(path: Path, where: str) -> SigningKey:
    """The public key in a PEM file, as a ``SigningKey``; a ``ConfigError`` naming ``where``
    when it cannot be read or is not an RSA, EC or Ed25519/Ed448 public key."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: {path} is not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return SigningKey(key, "RSA")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_NAMES:
        return SigningKey(key, "EC", _EC_NAMES[key.curve.name])
    if isinstance(key, ed25519.Ed25519PublicKey):
        return SigningKey(key, "OKP", "Ed25519")
    if isinstance(key, ed448.Ed448PublicKey):
        return SigningKey(key, "OKP", "Ed448")
    raise ConfigError(f"{where}: {path} is not an RSA, EC (P-256/384/521) or EdDSA public key")


def build_verifier(
    cfg: JwtConfig, http: JsonGetter, clock: Callable[[], float], *, source: str, base_dir: Path
) -> JwtVerifier:
    """The verifier ``auth.jwt`` describes: keys from the JWKS URL or the PEM file."""
    keys: KeySource
    if cfg.jwks_url is not None:
        keys = JwksCache(cfg.jwks_url, http, clock, refetch_s=cfg.jwks_refetch_s,
                         timeout_s=cfg.jwks_timeout_s, max_age_s=cfg.jwks_max_age_s)  # fmt: skip
    else:
        assert cfg.public_key_file is not None  # the config allows exactly one
        path = Path(cfg.public_key_file)
        path = path if path.is_absolute() else base_dir / path
        keys = StaticKey(pem_key(path, f"{source}: auth.jwt.public_key_file"))
    return JwtVerifier(cfg, keys, clock)
