"""Who may call an admin operation: the presented key resolved to an ``AdminActor``, and the
operation's ``need`` and ``tenant_ok`` checked against its role (``farebox.identity.roles``).

- ``FAREBOX_ADMIN_KEY`` (and the local CLI's token) is the owner, compared by hash in
  constant time; any other ``fba_`` key is looked up by its hash as the data plane looks up
  tenant keys (the authenticator's cache, which the store's auth epoch invalidates, so a
  revoked admin key is refused at once in every worker).
- No admin key: 401. A role without the need: 403 ``insufficient_role``, naming the role.
- A ``tenant_admin`` is allowed only ``tenant_ok`` operations, and only on its own tenant:
  a ``{tenant_id}`` in the path must be its tenant, a ``{key_id}`` one of its tenant's keys,
  and a ``tenant`` query filter is its tenant (forced when not given: ``scoped_tenant``).
  Anything else answers exactly what a missing route, tenant or key answers (404), so it
  learns nothing about other tenants.

The decision runs before the operation's own input checks (``admin_refusal`` is asked by the
validation-error handler too), so a refused caller never learns what input is valid.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any

from fastapi import Query, Request

from farebox.api.context import Services
from farebox.api.gate import ACTOR  # where the gate leaves the actor in the ASGI scope
from farebox.core.keys import ADMIN_PREFIX, hash_key, same_secret
from farebox.errors import AuthenticationError, FareboxError, InsufficientRole, NotFound
from farebox.gateway.auth import bearer_key
from farebox.identity.roles import (
    LEAST_ROLE,
    OWNER,
    AdminActor,
    check_need,
    decide,
    refusal_message,
    role_of,
    scoped,
)
from farebox.identity.tenancy import TENANT_ID

POLICY = "x-farebox-access"  # each admin operation's need and tenant_ok, in its OpenAPI entry
NO_KEY = "This endpoint needs the admin key."
BEFORE = "farebox.audit_before"  # the audit trail's reader of ``before``: called once allowed


async def resolve_actor(services: Services, raw_key: str) -> AdminActor:
    """The admin actor a presented key is, or ``AuthenticationError``."""
    presented = hash_key(services.secret, raw_key)
    if any([same_secret(presented, h) for h in services.admin_hashes() if h]):
        return OWNER
    if not raw_key.startswith(ADMIN_PREFIX):
        raise AuthenticationError(NO_KEY)
    try:
        key = await services.auth.key_for(raw_key)
    except AuthenticationError:
        raise AuthenticationError(NO_KEY) from None
    try:
        role = role_of(key.role)
    except ValueError:
        raise AuthenticationError(NO_KEY) from None
    if key.kind != "admin" or (role == "tenant_admin" and not key.tenant_id):
        raise AuthenticationError(NO_KEY)
    return AdminActor(key.id, role, key.tenant_id if role == "tenant_admin" else None)


def actor_check(services: Services) -> Callable[[Mapping[str, str]], Awaitable[AdminActor | None]]:
    """The gate's check: the actor of the request's headers, or None (a 401)."""

    async def check(headers: Mapping[str, str]) -> AdminActor | None:
        try:
            return await resolve_actor(services, bearer_key(headers))
        except AuthenticationError:
            return None

    return check


async def actor_of(services: Services, request: Request) -> AdminActor:
    """The request's admin actor: as the gate resolved it, else resolved now."""
    actor = request.scope.get(ACTOR)
    if not isinstance(actor, AdminActor):
        actor = await resolve_actor(services, bearer_key(request.headers))
    request.state.admin_actor = actor
    return actor


def policy(need: str, tenant_ok: bool) -> dict[str, Any]:
    """An operation's access, as its OpenAPI entry states it (``x-farebox-access``)."""
    need = check_need(need)
    return {"need": need, "role": LEAST_ROLE[need], "tenant_ok": tenant_ok}


def no_route(request: Request) -> NotFound:
    """What a path no operation serves answers (the app's 404 handler says the same)."""
    return NotFound(f"No route for {request.method} {request.url.path}.")


def tenant_not_found(tenant_id: str) -> NotFound:
    """What a missing tenant answers (``Tenancy.tenant``)."""
    return NotFound(f"Tenant {tenant_id!r} not found.", code="tenant_not_found")


async def authorize(
    services: Services, actor: AdminActor, need: str, tenant_ok: bool, request: Request
) -> None:
    """Raise unless ``actor`` may call this operation with these path parameters."""
    verdict = decide(actor, need, tenant_ok)
    if verdict == "forbid":
        raise InsufficientRole(refusal_message(need), extra={"needed_role": LEAST_ROLE[need]})
    if verdict == "hide":
        raise no_route(request)
    if actor.tenant_bound:
        await _own_path(services, actor, request)


async def _key_owner(services: Services, key_id: str) -> tuple[str | None, NotFound]:
    key = await services.store.get_key(key_id)
    owner = key.tenant_id if key is not None and key.kind == "tenant" else None
    return owner, NotFound(f"Key {key_id!r} not found.", code="key_not_found")


# a path parameter other than {tenant_id} -> whose tenant its object is, and what a missing
# one answers; a tenant_ok operation with a parameter neither here nor under
# /tenants/{tenant_id} is hidden from a tenant_admin (fail closed)
OWNERS: Mapping[str, Callable[[Services, str], Awaitable[tuple[str | None, NotFound]]]] = (
    MappingProxyType({"key_id": _key_owner})
)


async def _own_path(services: Services, actor: AdminActor, request: Request) -> None:
    """A tenant_admin's path names its own tenant, and objects of its tenant only."""
    params = {k: str(v) for k, v in request.path_params.items()}
    tenant_id = params.pop("tenant_id", None)
    if tenant_id is not None and not scoped(actor, tenant_id):
        raise tenant_not_found(tenant_id)
    for name, value in params.items():
        owner_of = OWNERS.get(name)
        if owner_of is None:
            if tenant_id is None:
                raise no_route(request)
            continue  # under /tenants/{tenant_id}: the handler finds it in that tenant
        owner, missing = await owner_of(services, value)
        if not scoped(actor, owner):
            raise missing


def access(services: Services, need: str, tenant_ok: bool) -> Callable[[Request], Awaitable[None]]:
    """The dependency of one admin operation: who calls, and may it."""
    need = check_need(need)

    async def check(request: Request) -> None:
        actor = await actor_of(services, request)
        await authorize(services, actor, need, tenant_ok, request)
        read_before = request.scope.get(BEFORE)  # the audit trail's (audit_trail.py)
        if read_before is not None:
            await read_before()

    return check


async def admin_refusal(request: Request) -> FareboxError | None:
    """Why the caller may not call the request's admin operation (asked before its input
    is judged, so that a refused caller learns nothing from a 400), or None."""
    route = request.scope.get("route")
    found = (getattr(route, "openapi_extra", None) or {}).get(POLICY)
    services = getattr(request.app.state, "services", None)
    if not isinstance(found, dict) or services is None:
        return None
    try:
        actor = await actor_of(services, request)
        await authorize(services, actor, found["need"], found["tenant_ok"], request)
    except FareboxError as exc:
        return exc
    return None


TenantQuery = Annotated[
    str | None, Query(alias="tenant", min_length=1, max_length=64, pattern=TENANT_ID.pattern)
]
TenantIdQuery = Annotated[
    str | None, Query(alias="tenant_id", min_length=1, max_length=64, pattern=TENANT_ID.pattern)
]


def own_tenant(request: Request, value: str | None) -> str | None:
    """A ``tenant`` query filter as the caller may use it: any tenant for an admin of the
    platform; for a ``tenant_admin``, its own (forced when not given, a 404 when another
    is asked for)."""
    actor = getattr(request.state, "admin_actor", None)
    if not isinstance(actor, AdminActor) or not actor.tenant_bound:
        return value
    if value is not None and not scoped(actor, value):
        raise tenant_not_found(value)
    return actor.tenant


async def scoped_tenant(request: Request, tenant: TenantQuery = None) -> str | None:
    """The dependency behind every ``?tenant=`` filter (``own_tenant``)."""
    return own_tenant(request, tenant)


async def scoped_tenant_id(request: Request, tenant_id: TenantIdQuery = None) -> str | None:
    """The dependency behind ``?tenant_id=`` (``/series``): ``own_tenant``."""
    return own_tenant(request, tenant_id)
