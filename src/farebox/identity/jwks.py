"""The JWKS cache: the signing keys of ``auth.jwt.jwks_url``, fetched through the gateway's one
HTTP client, kept in memory, and re-fetched when a token names a ``kid`` not among them (at most
once per ``jwks_refetch_s``, so a flood of made-up kids costs one fetch per period), and when
the set is older than ``jwks_max_age_s`` (so a key the identity provider removed stops being
trusted; ``generation`` counts the changes, and the verifier drops the claims it verified
under an older set).

A JWKS server that is down, slow, or answers garbage (not JSON, no ``keys``, no usable key)
changes nothing: the keys already held keep working and the failure is logged. Symmetric
(``oct``) keys and keys not meant for signatures are ignored. Needs ``farebox[identity]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from farebox.errors import FareboxError
from farebox.http.client import HttpResponse

log = logging.getLogger("farebox.identity")
MAX_KEYS = 100  # a JWKS with more keys than this is read up to here
MAX_JWKS_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A public key a token may be verified with: ``key`` (a ``cryptography`` public key),
    its JWK type (``RSA``, ``EC``, ``OKP``), curve (EC and OKP), and the ``alg`` its JWK
    pins, if any."""

    key: Any
    kty: str
    crv: str | None = None
    alg: str | None = None


class JsonGetter(Protocol):
    """What the cache needs of ``farebox.http.client.HttpClient``."""

    async def get_json(
        self, url: str, query: Mapping[str, str | int], headers: Mapping[str, str],
        timeout_s: float,
    ) -> HttpResponse: ...  # fmt: skip


class JwksCache:
    """The keys of one JWKS URL (from config), by ``kid``."""

    def __init__(
        self,
        url: str,
        http: JsonGetter,
        clock: Callable[[], float],
        *,
        refetch_s: float = 30.0,
        timeout_s: float = 5.0,
        max_age_s: float = 300.0,
    ) -> None:
        self._url = url
        self._http = http
        self._clock = clock
        self._refetch_s = refetch_s
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._fingerprint = b""  # the usable keys of the set held, canonical JSON
        self.generation = 0  # bumped each time the set held changes
        self._keys: dict[str, SigningKey] = {}
        self._unnamed: list[SigningKey] = []  # keys without a kid
        self._fetched_at: float | None = None  # the last attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts so far (what tests and operators may look at)

    async def key(self, kid: str | None) -> SigningKey | None:
        """The key ``kid`` names (a token without a kid: the set's only key), re-fetching
        the set once when it is not known and the last fetch is old enough."""
        found = self._lookup(kid)
        if found is not None:
            return found
        async with self._lock:  # one fetch at a time; the others find its result
            found = self._lookup(kid)
            if found is None and self._may_fetch():
                await self.refresh()
                found = self._lookup(kid)
        return found

    async def fresh(self) -> int:
        """Re-fetch the set when it is older than ``max_age_s`` (one fetch at a time; a
        failed fetch keeps the keys and waits another period); the set's ``generation``."""
        last = self._fetched_at
        if last is not None and self._clock() - last < self._max_age_s:
            return self.generation
        async with self._lock:
            last = self._fetched_at
            if last is None or self._clock() - last >= self._max_age_s:
                await self.refresh()
        return self.generation

    def _lookup(self, kid: str | None) -> SigningKey | None:
        if kid is not None:
            return self._keys.get(kid)
        every = [*self._keys.values(), *self._unnamed]
        return every[0] if len(every) == 1 else None

    def _may_fetch(self) -> bool:
        last = self._fetched_at
        return last is None or self._clock() - last >= self._refetch_s

    async def refresh(self) -> bool:
        """Fetch the set now; on success it replaces the keys held (a rotated-out key is
        dropped), on any failure they are kept. True when the set was replaced."""
        self._fetched_at = self._clock()
        self.fetches += 1
        try:
            response = await self._http.get_json(
                self._url, {}, {"accept": "application/json"}, self._timeout_s
            )
        except FareboxError as exc:
            log.warning("JWKS %s unreachable, keeping %d cached keys: %s",
                        self._url, len(self._keys) + len(self._unnamed), exc.message)  # fmt: skip
            return False
        parsed = _parse(response)
        if isinstance(parsed, str):
            log.warning("JWKS %s unusable (%s), keeping the cached keys", self._url, parsed)
            return False
        self._keys, self._unnamed, fingerprint = parsed
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self.generation += 1
        return True


def _parse(
    response: HttpResponse,
) -> tuple[dict[str, SigningKey], list[SigningKey], bytes] | str:
    """The usable signing keys of a JWKS response (by kid, without one, and all of them as
    canonical JSON), or what is wrong with it."""
    if response.status != 200:
        return f"HTTP {response.status}"
    if len(response.body) > MAX_JWKS_BYTES:
        return "larger than 1 MiB"
    try:
        data = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return "not JSON"
    items = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return "no 'keys' list"
    named: dict[str, SigningKey] = {}
    unnamed: list[SigningKey] = []
    used: list[Any] = []
    for item in items[:MAX_KEYS]:
        key = _signing_key(item)
        if key is None:
            continue
        used.append(item)
        kid = item.get("kid")
        if isinstance(kid, str):
            named.setdefault(kid, key)
        else:
            unnamed.append(key)
    if not (named or unnamed):
        return "no usable signing key"
    return named, unnamed, orjson.dumps(used, option=orjson.OPT_SORT_KEYS)


def _signing_key(item: Any) -> SigningKey | None:
    """A JWK as a verification key, or None: not an object, symmetric, for encryption, or a
    type or curve PyJWT cannot use."""
    if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC", "OKP"):
        return None
    if item.get("use", "sig") != "sig" or "d" in item:  # encryption keys; private keys
        return None
    try:
        jwk = PyJWK(item)
    except (PyJWKError, ValueError, TypeError, KeyError):
        return None
    crv, alg = item.get("crv"), item.get("alg")
    return SigningKey(jwk.key, item["kty"], crv if isinstance(crv, str) else None,
                      alg if isinstance(alg, str) else None)  # fmt: skip
