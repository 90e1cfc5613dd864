"""Admin endpoints of workspaces (a tenant's teams or projects: create, list, read, change,
delete) and the key listing across tenants filtered by workspace and key metadata
(``GET /keys?tenant=&workspace=&metadata.user_email=...``), which shows each key's budgets in
force with what is used and left (``usage_limits``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any

import orjson
from fastapi import Query, Request
from pydantic import AfterValidator, Field

from farebox.api.admin.caps import Caller, bound, validated, workspace_within_plan
from farebox.api.admin.params import AdminBody, TenantFilter
from farebox.api.context import Services
from farebox.core.records import ApiKey, Tenant, Workspace
from farebox.errors import InvalidRequest, NotFound
from farebox.gateway.budget_scope import Scope, state_json
from farebox.identity.roles import AdminActor
from farebox.identity.tenancy import key_json
from farebox.identity.workspaces import WORKSPACE_ID, Workspaces, workspace_json

MAX_KEY_METADATA_BYTES = 4096
MAX_LISTED_KEYS = 1000  # the key listing's largest page (``limit``)
PAGE = "At most this many keys in the page (1-1000; default 100), oldest first."
CURSOR = "A page's next_cursor, unchanged: the page after it (null next_cursor: the last page)."
METADATA_PREFIX = "metadata."
# a route option: query parameter families the route takes besides its named ones, which the
# router's ``known_query`` lets through (the key listing's ``metadata.<field>`` filters)
QUERY_PREFIXES = "x-farebox-query-prefixes"
METADATA_QUERY: Mapping[str, Any] = MappingProxyType(
    {"openapi_extra": {QUERY_PREFIXES: [METADATA_PREFIX]}}
)


def bounded(limit: int) -> AfterValidator:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError:
            raise ValueError(
                "metadata must be JSON-encodable: integers within 64 bits, nested at most "
                "255 levels"
            ) from None
        if size > limit:
            raise ValueError(f"metadata must encode to at most {limit} bytes of JSON")
        return value

    return AfterValidator(check)


KeyMetadata = Annotated[dict[str, Any], bounded(MAX_KEY_METADATA_BYTES)]
WorkspaceMetadata = Annotated[dict[str, Any], bounded(16_384)]
WorkspaceFilter = Annotated[
    str | None, Query(min_length=1, max_length=64, pattern=WORKSPACE_ID.pattern)
]


class WorkspaceCreate(AdminBody):
    id: str = Field(min_length=1, max_length=64, pattern=WORKSPACE_ID.pattern)
    name: str | None = Field(None, min_length=1, max_length=256)
    budgets: list[dict[str, Any]] = Field(default_factory=list, max_length=100)
    rate_limits: list[dict[str, Any]] = Field(default_factory=list, max_length=100)
    metadata: WorkspaceMetadata = Field(default_factory=dict)


class WorkspacePatch(AdminBody):
    name: str | None = Field(None, min_length=1, max_length=256)
    budgets: list[dict[str, Any]] | None = Field(None, max_length=100)
    rate_limits: list[dict[str, Any]] | None = Field(None, max_length=100)
    metadata: WorkspaceMetadata | None = None


def metadata_filters(request: Request) -> dict[str, str]:
    """``metadata.<field>=<value>`` query parameters: keys whose metadata has that value."""
    found = {}
    for name, value in request.query_params.items():
        if name.startswith(METADATA_PREFIX):
            field = name[len(METADATA_PREFIX) :]
            if not field or len(field) > 128 or len(value) > 1024:
                raise InvalidRequest(
                    f"{name!r}: a metadata filter is metadata.<field> (1-128 characters) = "
                    "a value of at most 1024 characters.",
                    param=name,
                )
            found[field] = value
    return found


def matches(key: ApiKey, filters: dict[str, str]) -> bool:
    """Each filter's field is in the key's metadata with that value (a non-string value
    matches its JSON text: ``metadata.level=3``, ``metadata.admin=true``)."""
    for field, wanted in filters.items():
        if field not in key.metadata:
            return False
        have = key.metadata[field]
        if (have if isinstance(have, str) else orjson.dumps(have).decode()) != wanted:
            return False
    return True


def _after(cursor: str | None) -> tuple[float, str] | None:
    """The position a ``cursor`` (a page's ``next_cursor``) names: after this key."""
    if cursor is None:
        return None
    when, _, key_id = cursor.partition(":")
    try:
        at = float(when)
    except ValueError:
        at = math.nan
    if not key_id or not math.isfinite(at):
        raise InvalidRequest(
            "cursor: pass back a page's next_cursor unchanged.", param="cursor"
        )  # fmt: skip
    return at, key_id


class WorkspaceRoutes:
    """The handlers of ``/tenants/{tenant_id}/workspaces[/{workspace_id}]`` and ``/keys``."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.workspaces = Workspaces(services.store, services.clock)

    async def within_plan(
        self, actor: AdminActor | None, tenant_id: str, workspace_id: str | None,
        changes: dict[str, Any],
    ) -> None:  # fmt: skip
        """A tenant_admin's overrides held to its plan, tenant and the workspace's own."""
        if not bound(actor):
            return
        tenant = await self.services.store.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound(f"Tenant {tenant_id!r} not found.", code="tenant_not_found")
        current = (
            None if workspace_id is None else await self.workspaces.get(tenant_id, workspace_id)
        )
        workspace_within_plan(self.services, tenant, current, changes)

    async def create_workspace(
        self, tenant_id: str, body: WorkspaceCreate, actor: Caller = None
    ) -> dict[str, Any]:
        fields = validated(body.model_dump())
        await self.within_plan(actor, tenant_id, None, fields)
        made = await self.workspaces.create(
            tenant_id, body.id, body.name, budgets=fields.get("budgets", ()),
            rate_limits=fields.get("rate_limits", ()), metadata=body.metadata,
        )  # fmt: skip
        return workspace_json(made)

    async def list_workspaces(self, tenant_id: str) -> dict[str, Any]:
        found = await self.workspaces.all(tenant_id)
        return {"object": "list", "data": [workspace_json(w) for w in found]}

    async def get_workspace(self, tenant_id: str, workspace_id: str) -> dict[str, Any]:
        return workspace_json(await self.workspaces.get(tenant_id, workspace_id))

    async def patch_workspace(
        self, tenant_id: str, workspace_id: str, body: WorkspacePatch, actor: Caller = None
    ) -> dict[str, Any]:
        changes = validated(body.model_dump(exclude_unset=True))
        if not changes:
            raise InvalidRequest("Nothing to change: send name, budgets, rate_limits or metadata.")
        await self.within_plan(actor, tenant_id, workspace_id, changes)
        return workspace_json(await self.workspaces.update(tenant_id, workspace_id, changes))

    async def delete_workspace(self, tenant_id: str, workspace_id: str) -> dict[str, Any]:
        gone = await self.workspaces.delete(tenant_id, workspace_id)
        return {**workspace_json(gone), "deleted": True}

    async def list_keys(
        self,
        request: Request,
        tenant: TenantFilter = None,
        workspace: WorkspaceFilter = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LISTED_KEYS, description=PAGE)] = 100,
        cursor: Annotated[
            str | None, Query(min_length=3, max_length=256, description=CURSOR)
        ] = None,  # fmt: skip
    ) -> dict[str, Any]:
        """Tenant keys, by tenant, workspace and metadata; each with its budgets' states. One
        page of at most ``limit`` keys, oldest first; ``next_cursor`` (null on the last page)
        is the next page's ``cursor``."""
        filters = metadata_filters(request)
        after = _after(cursor)
        if workspace is not None and tenant is None:
            raise InvalidRequest("workspace filters need a tenant: add tenant=.", param="tenant")
        keys = sorted(
            (k for k in await self.services.store.list_keys(tenant, "tenant")
             if (workspace is None or k.workspace_id == workspace) and matches(k, filters)
             and (after is None or (k.created_at, k.id) > after)),
            key=lambda k: (k.created_at, k.id),
        )  # fmt: skip
        page, more = keys[:limit], len(keys) > limit
        limits = await self.usage_limits(page)
        data = [{**key_json(k), "usage_limits": limits.get(k.id, [])} for k in page]
        following = f"{page[-1].created_at!r}:{page[-1].id}" if more else None
        return {"object": "list", "data": data, "next_cursor": following}

    async def usage_limits(self, keys: Sequence[ApiKey]) -> dict[str, list[dict[str, Any]]]:
        """Each key's own budgets in force (plan, tenant, workspace and key levels merged),
        with what is used and left: one read of the counters for every key."""
        tenants: dict[str, Tenant | None] = {}
        spaces: dict[tuple[str, str], Workspace | None] = {}
        store, budgets, now = self.services.store, self.services.budgets, self.services.clock()
        holds: dict[str, list[Any]] = {}
        for key in keys:
            tid = key.tenant_id or ""
            if tid not in tenants:
                tenants[tid] = await store.get_tenant(tid)
            tenant = tenants[tid]
            if tenant is None:
                continue
            slot = (tid, key.workspace_id)
            if slot not in spaces:
                spaces[slot] = await store.workspaces.get_workspace(*slot)
            plan = self.services.gateway.plan_name(tenant)
            scope = Scope.of(tenant, key, plan, workspace=spaces[slot] or key.workspace_id)
            if budgets.scopes.enabled(scope):
                holds[key.id] = [h for h in budgets.scopes.holds(scope, now) if h.scope == "key"]
        every = [h for found in holds.values() for h in found]
        states = await store.budget_states(every) if every else []
        by_counter = {(s.hold.key, s.hold.bucket): s for s in states}
        return {
            kid: [state_json(by_counter[(h.key, h.bucket)]) for h in found]
            for kid, found in holds.items()
        }
