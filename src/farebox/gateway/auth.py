"""Authentication: raw key -> ``Principal``, through an LRU cache that a store epoch
invalidates, so a revoked, paused or expired key is refused at once in every worker.

With ``auth.jwt`` configured, a bearer that is not a Farebox key (``fbx_``, ``fbs_``, ``fba_``)
and has a JWT's shape is verified as one (``farebox.identity.jwt``): its tenant claim names the
tenant, its user claim the end user (with ``user_claim`` configured, the claim is the only
user: a token without it is refused, ``X-Farebox-User`` and the body's ``user`` are ignored;
without it, the header fills in), its workspace claim the workspace (one the tenant does not
have is refused 401 ``token_unknown_workspace``; none: ``default``). A JWT caller's key is the
synthetic record ``jwt_key(tenant)`` (id ``jwt:<tenant>``, never stored): its ledger entries
name that key, and key-scope budgets and limits hold for all of a tenant's JWT callers
together (per-user ones for each user claim).

With ``auth.subdomain`` configured, the request's host (``farebox.identity.subdomain``) may
name a tenant: a service key without ``X-Farebox-Tenant`` acts for it, and any credential
whose tenant is another one (a tenant key, a JWT, a service key naming another in the header)
is refused 403 ``tenant_host_mismatch``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from farebox.core.cache import ASK_DEFAULT, MAX_NAMESPACE_CHARS, CacheAsk
from farebox.core.keys import (
    ADMIN_PREFIX,
    JWT_KEY_PREFIX,
    SERVICE_PREFIX,
    TENANT_PREFIX,
    hash_key,
)
from farebox.core.records import DEFAULT_WORKSPACE, ApiKey, Tenant, Workspace
from farebox.errors import (
    AuthenticationError,
    Conflict,
    InvalidRequest,
    KeyPaused,
    MissingTenant,
    NotFound,
    TenantHostMismatch,
    TenantPaused,
    TokenUnknownWorkspace,
    UnknownTenant,
)
from farebox.identity.claims import Claims, TokenVerifier, looks_like_jwt
from farebox.identity.subdomain import host_tenant
from farebox.stores.base import AccountStore, WorkspaceStore

MAX_ATTR_LEN = 256
MAX_METADATA_BYTES = 4096
MAX_TTL_DIGITS = 12  # x-farebox-cache-ttl: seconds, at most the plan's ttl_s in effect
KEY_PREFIXES = (TENANT_PREFIX, SERVICE_PREFIX, ADMIN_PREFIX)


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: Tenant
    key: ApiKey
    user: str | None = None
    feature: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    workspace: str | None = None  # the key's workspace, or a JWT's workspace claim
    client_ip: str | None = None  # from the socket, or X-Forwarded-For via a trusted proxy
    # what the request's headers ask of the response cache (``farebox.gateway.cache``)
    cache: CacheAsk = ASK_DEFAULT
    # the workspace's record (its budget and rate-limit overrides), loaded with the key
    workspace_record: Workspace | None = None
    # ``user`` came from a JWT's user claim (``auth.jwt.user_claim``): it is the end user's own
    # identity, not a header or body field the caller chose
    user_fixed: bool = False
    # ``X-Farebox-Device``: the SaaS's fingerprint of the client device, believed from a
    # trusted proxy or with a service key (issue 15: account multiplication)
    device: str | None = None

    @property
    def counted_clients(self) -> tuple[str, ...]:
        """The clients account multiplication records for this request: the client IP
        (never a service key's bare IP: the SaaS's own server, acting for many tenants) AND
        the device when one is believed (``device:<fingerprint>``). The device never
        replaces the IP, so a made-up device per request cannot hide the IP."""
        ip = self.client_ip if self.key.kind != "service" else None
        device = f"device:{self.device}" if self.device else None
        return tuple(c for c in (ip, device) if c)

    @property
    def from_jwt(self) -> bool:
        """The caller presented a JWT (its key is the synthetic ``jwt:<tenant>``)."""
        return self.key.id.startswith(JWT_KEY_PREFIX)

    @property
    def workspace_id(self) -> str | None:
        """The request's workspace: ``workspace``, else a tenant key's own (a service key
        acting for a tenant has none)."""
        return self.workspace or (self.key.workspace_id if self.key.tenant_id else None)

    def workspace_scope(self) -> str | Workspace | None:
        """The request's workspace for budgets and rate limits: ``workspace`` (a JWT claim
        may set it), else the key's; its record when loaded for it (its overrides apply)."""
        ws = self.workspace_id
        record = self.workspace_record
        if record is not None and record.id == ws and record.tenant_id == self.tenant.id:
            return record
        return ws


def bearer_key(headers: Mapping[str, str]) -> str:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = headers.get("x-api-key")
    if api_key:
        return api_key.strip()
    raise AuthenticationError(
        "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
    )


def jwt_key(tenant_id: str) -> ApiKey:
    """The synthetic, stable key record of a tenant's JWT callers (never stored). Its id is
    per tenant because key-scope counters are named by key id alone."""
    key_id = JWT_KEY_PREFIX + tenant_id
    return ApiKey(key_id, "", "tenant", "JWT", 0.0, tenant_id=tenant_id, prefix="jwt")


def _attribute(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_ATTR_LEN:
        raise InvalidRequest(f"{name} is longer than {MAX_ATTR_LEN} characters", param=name)
    return value


def _metadata(headers: Mapping[str, str]) -> dict[str, Any]:
    raw = headers.get("x-farebox-metadata")
    if not raw:
        return {}
    problem = InvalidRequest(
        f"X-Farebox-Metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes, "
        "nested at most 32 levels, with integers of at most 64 bits",
        param="X-Farebox-Metadata",
    )
    if len(raw) > MAX_METADATA_BYTES:
        raise problem
    try:
        value = orjson.loads(raw)
        if not isinstance(value, dict) or _depth(value) > 32:
            raise problem
        orjson.dumps(value)  # what the ledger will store must encode
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        raise problem from None
    return value


def cache_ask(headers: Mapping[str, str]) -> CacheAsk:
    """What the request's headers ask of the response cache: ``Cache-Control`` (``no-cache``:
    look nothing up, store the answer; ``no-store``: neither; other directives are ignored),
    ``x-farebox-cache-ttl`` (whole seconds, at least 1) and ``X-Farebox-Cache-Namespace``
    (1 to 64 printable ASCII characters). A bad value is a 400 naming the header."""
    control = headers.get("cache-control")
    ttl = headers.get("x-farebox-cache-ttl")
    namespace = headers.get("x-farebox-cache-namespace")
    if control is None and ttl is None and not namespace:
        return ASK_DEFAULT
    lookup = store = True
    for directive in (control or "").lower().split(","):
        name = directive.partition("=")[0].strip()
        if name == "no-store":
            lookup = store = False
        elif name == "no-cache":
            lookup = False
    return CacheAsk(lookup, store, _cache_ttl(ttl), _namespace(namespace))


def _cache_ttl(raw: str | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_TTL_DIGITS and int(text)):
        raise InvalidRequest(
            "x-farebox-cache-ttl must be a whole number of seconds, at least 1 "
            f"(at most {MAX_TTL_DIGITS} digits); got {raw[:40]!r}",
            param="x-farebox-cache-ttl",
        )
    return int(text)


def _namespace(raw: str | None) -> str | None:
    if not raw:  # absent, or sent empty: the partition's own entries
        return None
    if len(raw) > MAX_NAMESPACE_CHARS or not all(" " <= c <= "~" for c in raw):
        raise InvalidRequest(
            f"X-Farebox-Cache-Namespace must be 1 to {MAX_NAMESPACE_CHARS} printable ASCII "
            "characters",
            param="X-Farebox-Cache-Namespace",
        )
    return raw


def _depth(value: Any, level: int = 1) -> int:
    if level > 32:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


class Authenticator:
    def __init__(
        self,
        store: AccountStore,
        secret: bytes,
        clock: Callable[[], float],
        cache_size: int = 10_000,
        appeal: str = "Contact the platform operator to resume it.",
        *,
        jwt: TokenVerifier | None = None,
        base_domain: str | None = None,
        auto_create_plan: str | None = None,
        workspaces: WorkspaceStore | None = None,
    ) -> None:
        self._appeal = appeal  # how a paused tenant asks to be resumed
        self._jwt = jwt  # auth.jwt: None when bearer tokens are not accepted
        self._base_domain = base_domain  # auth.subdomain.base_domain
        self._auto_plan = auto_create_plan  # auth.jwt.auto_create_tenants.plan
        self.uses_host = base_domain is not None  # whether authenticate needs the host
        self._store = store
        self._workspace_store = workspaces  # workspaces' budgets and limits, cached alike
        self._workspaces: dict[tuple[str, str], Workspace | None] = {}
        self._secret = secret
        self._clock = clock
        self._size = cache_size
        self._keys: OrderedDict[str, ApiKey | None] = OrderedDict()
        self._tenants: dict[str, Tenant | None] = {}
        self._epoch = -1

    async def _sync_epoch(self) -> None:
        epoch = await self._store.auth_epoch()
        if epoch != self._epoch:
            self._keys.clear()
            self._tenants.clear()
            self._workspaces.clear()
            self._epoch = epoch

    async def _fresh(self, epoch: int) -> bool:
        """Nothing changed since a read began under ``epoch``: its result may be cached."""
        return epoch == self._epoch == await self._store.auth_epoch()

    async def _key(self, key_hash: str) -> ApiKey | None:
        if key_hash in self._keys:
            self._keys.move_to_end(key_hash)
            return self._keys[key_hash]
        epoch = self._epoch
        key = await self._store.get_key_by_hash(key_hash)
        if self._size and await self._fresh(epoch):
            self._keys[key_hash] = key
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)
        return key

    async def _tenant(self, tenant_id: str) -> Tenant | None:
        if tenant_id in self._tenants:
            return self._tenants[tenant_id]
        epoch = self._epoch
        tenant = await self._store.get_tenant(tenant_id)
        if len(self._tenants) < max(self._size, 1) and await self._fresh(epoch):
            self._tenants[tenant_id] = tenant
        return tenant

    async def workspace(self, tenant_id: str, workspace_id: str) -> Workspace | None:
        """A tenant's workspace (its budget and rate-limit overrides), cached like keys and
        tenants until the auth epoch moves (every workspace change bumps it)."""
        if self._workspace_store is None:
            return None
        slot = (tenant_id, workspace_id)
        if slot in self._workspaces:
            return self._workspaces[slot]
        epoch = self._epoch
        found = await self._workspace_store.get_workspace(tenant_id, workspace_id)
        if len(self._workspaces) < max(self._size, 1) and await self._fresh(epoch):
            self._workspaces[slot] = found
        return found

    async def key_for(self, raw_key: str) -> ApiKey:
        """The live key record for a presented key, or ``AuthenticationError``."""
        await self._sync_epoch()
        key = await self._key(hash_key(self._secret, raw_key))
        if key is None or not key.usable_at(self._clock()):
            raise AuthenticationError("Invalid, revoked or expired API key.")
        return key

    async def authenticate(
        self,
        headers: Mapping[str, str],
        client_ip: str | None = None,
        host: str | None = None,
        device: str | None = None,
    ) -> Principal:
        """``host``: the request's host (``Host``, or ``X-Forwarded-Host`` from a trusted
        proxy), given when ``uses_host``; ``device``: ``X-Farebox-Device`` when a trusted
        proxy sent it (a service key's own header is believed too)."""
        raw = bearer_key(headers)
        if self._jwt is not None and not raw.startswith(KEY_PREFIXES) and looks_like_jwt(raw):
            who = await self._token_principal(await self._jwt.verify(raw), headers, client_ip,
                                              host)  # fmt: skip
            return replace(who, device=device) if device else who
        key = await self.key_for(raw)
        if key.kind == "admin":
            raise AuthenticationError("The admin key cannot call the data plane.")
        tenant = await self._resolve_tenant(key, headers, host)
        if tenant.paused or key.paused:
            self._refuse_paused(tenant, key)
        ws = key.workspace_id if key.tenant_id is not None else None
        return Principal(
            tenant=tenant,
            key=key,
            workspace=ws,
            workspace_record=await self.workspace(tenant.id, ws) if ws is not None else None,
            user=_attribute(headers, "x-farebox-user"),
            feature=_attribute(headers, "x-farebox-feature"),
            metadata=_metadata(headers),
            client_ip=client_ip,
            cache=cache_ask(headers),
            device=device
            or (
                _attribute(headers, "x-farebox-device") if key.kind == "service" else None
            ),  # fmt: skip
        )

    def _refuse_paused(self, tenant: Tenant, key: ApiKey) -> None:
        if tenant.paused:
            raise TenantPaused(
                f"Tenant {tenant.id!r} is paused"
                + (f": {tenant.pause_reason}" if tenant.pause_reason else ".")
                + f" {self._appeal}",
                extra={"reason": tenant.pause_reason, "appeal": self._appeal},
            )
        if key.paused:
            raise KeyPaused(
                "This API key is paused"
                + (f": {key.pause_reason}" if key.pause_reason else ".")
                + f" {self._appeal}",
                extra={"reason": key.pause_reason, "appeal": self._appeal},
            )

    async def _resolve_tenant(
        self, key: ApiKey, headers: Mapping[str, str], host: str | None = None
    ) -> Tenant:
        named = host_tenant(host, self._base_domain) if self._base_domain else None
        if key.kind == "service":
            tenant_id = headers.get("x-farebox-tenant") or named
            if not tenant_id:
                raise MissingTenant(
                    "A service key must name its tenant in the X-Farebox-Tenant header"
                    + (" or the host's subdomain." if self._base_domain else "."),
                    param="X-Farebox-Tenant",
                )
        else:
            tenant_id = key.tenant_id or ""
        if named is not None and named != tenant_id:
            raise _mismatch(named)
        tenant = await self._tenant(tenant_id)
        if tenant is None:
            if key.kind == "service":
                raise NotFound(
                    f"Unknown tenant {tenant_id!r} in X-Farebox-Tenant.", code="tenant_not_found"
                )
            raise AuthenticationError("Invalid API key.")
        return tenant

    async def _token_principal(
        self, claims: Claims, headers: Mapping[str, str], client_ip: str | None, host: str | None
    ) -> Principal:
        """The principal of a verified JWT: its tenant (created when configured to be), the
        synthetic ``jwt:<tenant>`` key, its user and workspace claims."""
        named = host_tenant(host, self._base_domain) if self._base_domain else None
        if named is not None and named != claims.tenant:
            raise _mismatch(named)
        await self._sync_epoch()
        tenant = await self._tenant(claims.tenant) or await self._create_tenant(claims.tenant)
        key = jwt_key(tenant.id)
        if tenant.paused:
            self._refuse_paused(tenant, key)
        ws = claims.workspace or DEFAULT_WORKSPACE
        record = await self.workspace(tenant.id, ws)
        if record is None and claims.workspace and self._workspace_store is not None:
            raise TokenUnknownWorkspace(
                f"The token names workspace {claims.workspace!r:.80}, which tenant "
                f"{tenant.id!r} does not have."
            )
        return Principal(
            tenant=tenant,
            key=key,
            # a verifier with a user claim configured refuses tokens without one, so a
            # claimed user is the only user: the header (and the body's ``user``) are ignored
            user=claims.user or _attribute(headers, "x-farebox-user"),
            user_fixed=claims.user is not None,
            feature=_attribute(headers, "x-farebox-feature"),
            metadata=_metadata(headers),
            workspace=claims.workspace,  # none: the synthetic key's (``default``)
            workspace_record=record,
            client_ip=client_ip,
            cache=cache_ask(headers),
        )

    async def _create_tenant(self, tenant_id: str) -> Tenant:
        """``auth.jwt.auto_create_tenants``: the tenant a valid token names, created on its
        first request. Race-safe: when another request (or replica) created it first, the
        store's ``Conflict`` is answered by reading that one back."""
        if self._auto_plan is None:
            raise UnknownTenant(f"The token names tenant {tenant_id!r}, which does not exist.")
        tenant = Tenant(tenant_id, tenant_id, self._auto_plan, self._clock(),
                        metadata={"created_by": "jwt"})  # fmt: skip
        try:
            await self._store.create_tenant(tenant)
        except Conflict:
            found = await self._store.get_tenant(tenant_id)
            if found is None:  # created and deleted again in between: refuse, do not loop
                raise UnknownTenant(f"Tenant {tenant_id!r} could not be created.") from None
            return found
        return tenant


def _mismatch(named: str) -> TenantHostMismatch:
    """A host that names a tenant must name the credential's own."""
    return TenantHostMismatch(
        f"This host is for tenant {named!r}; the credential belongs to another tenant."
    )
