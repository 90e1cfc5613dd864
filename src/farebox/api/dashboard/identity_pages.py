"""The dashboard's workspaces and keys page (``/dashboard/tenants/{id}/workspaces``) and its
forms: create and delete a workspace, create a key in one (its secret shown once, on the
answer page), revoke a key.

Each goes through the admin API's own handlers (``WorkspaceRoutes``, ``KeyRoutes``: the same
validation, the same identity services, the same plan checks) and asks the session's role for
the need of the matching ``AdminRoute``: reading needs ``read``, every form ``operate``, all
open to a ``tenant_admin`` on its own tenant only (another tenant's page, workspace or key is
the 404 of one that does not exist). Every form leaves one audit record (``audited``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from farebox.api.admin.keys import KeyCreate, KeyRoutes
from farebox.api.admin.workspaces import WorkspaceCreate, WorkspaceRoutes
from farebox.api.dashboard.access import parse_form
from farebox.api.dashboard.audited import note_of
from farebox.api.dashboard.pages import secure
from farebox.api.dashboard.routes import DashboardRoutes, may
from farebox.api.dashboard.sessions import Session
from farebox.errors import FareboxError, InvalidRequest, NotFound
from farebox.identity.tenancy import key_json

READ, OPERATE = "read", "operate"  # the needs of the matching admin API operations
MONTH_BUDGET = {"scope": "workspace", "period": "month"}


def _see(path: str) -> Response:
    return secure(RedirectResponse(path, status_code=303))


def checked(model: type[Any], data: Mapping[str, Any]) -> Any:
    """``data`` as the admin API's body model, or a 400 naming the first problem."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "form"
        raise InvalidRequest(f"{field}: {first['msg']}", param=field) from None


def monthly_budget(text: str) -> list[dict[str, Any]]:
    """The workspace's monthly budget from the form (USD; empty: none)."""
    text = text.strip().removeprefix("$")
    if not text:
        return []
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount <= 0 or amount > Decimal(10) ** 12:
        raise InvalidRequest("The monthly budget is a positive amount of USD, like 200 or 12.50.",
                             param="budget_usd")  # fmt: skip
    return [{**MONTH_BUDGET, "limit_usd": str(amount)}]


def metadata_of(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        found = orjson.loads(text)
    except orjson.JSONDecodeError:
        found = None
    if not isinstance(found, dict):
        raise InvalidRequest('Metadata is a JSON object, like {"team": "ml"}.', param="metadata")
    return found


def percent(text: str) -> int | None:
    """The alert threshold from the form (empty: none); the range is the API model's."""
    text = text.strip().removesuffix("%").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise InvalidRequest("alert_threshold: a whole percent from 1 to 100.",
                             param="alert_threshold")  # fmt: skip
    return int(text)


def month_limit(budgets: list[dict[str, Any]]) -> str | None:
    """A workspace's monthly workspace budget in USD, if it has one."""
    for b in budgets:
        if b.get("scope") == "workspace" and b.get("period") == "month" and not b.get("name"):
            return str(b.get("limit_usd")) if b.get("limit_usd") is not None else None
    return None


class IdentityRoutes:
    """The handlers of the workspaces and keys page and its forms."""

    def __init__(self, base: DashboardRoutes) -> None:
        self.base = base
        services = base.data.services
        self.spaces = WorkspaceRoutes(services)
        self.keys: KeyRoutes = base.data.keys

    async def page(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        session = await self.base.access.session(request)
        if session is None:
            return _see("/dashboard/signin")
        verdict = may(session, READ, True, tenant_id)
        if verdict != "allow":
            return self.base.refused(request, session, verdict)
        try:
            view = await self.view(tenant_id)
        except FareboxError as exc:
            return self.base.error(request, session, exc)
        manage = may(session, OPERATE, True, tenant_id) == "allow"
        return self.base.page("workspaces.html", request, session, view=view, manage=manage)

    async def view(self, tenant_id: str) -> dict[str, Any]:
        tenant = await self.keys.tenancy.tenant(tenant_id)
        spaces = (await self.spaces.list_workspaces(tenant_id))["data"]
        keys = [key_json(k) for k in await self.base.data.store.list_keys(tenant_id, "tenant")]
        keys.sort(key=lambda k: (str(k["workspace"]), -float(k["created_at"])))
        live: dict[str, int] = {}
        for k in keys:
            if not k["revoked"]:
                live[k["workspace"]] = live.get(k["workspace"], 0) + 1
        for space in spaces:
            space["month_usd"] = month_limit(space["budgets"])
            space["live_keys"] = live.get(space["id"], 0)
        return {"tenant": tenant, "workspaces": spaces, "api_keys": keys}

    def _here(self, tenant_id: str, anchor: str) -> Response:
        return _see(f"/dashboard/tenants/{tenant_id}/workspaces#{anchor}")

    async def create_workspace(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        form = parse_form(await request.body())

        async def run(request: Request, session: Session) -> Response:
            note = note_of(request)
            body = checked(WorkspaceCreate, {
                "id": form.get("id", "").strip(), "name": form.get("name", "").strip() or None,
                "budgets": monthly_budget(form.get("budget_usd", "")),
            })  # fmt: skip
            note.target = f"workspace:{body.id}"
            note.after = await self.spaces.create_workspace(tenant_id, body)
            return self._here(tenant_id, "workspaces")

        ws = form.get("id", "").strip()[:64]
        return await self.base._mutate(request, OPERATE, run, True, tenant_id,
                                       target=f"workspace:{ws}")  # fmt: skip

    async def delete_workspace(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        workspace_id = request.path_params["workspace_id"]

        async def run(request: Request, session: Session) -> Response:
            note = note_of(request)
            note.before = await self.spaces.get_workspace(tenant_id, workspace_id)
            note.after = await self.spaces.delete_workspace(tenant_id, workspace_id)
            return self._here(tenant_id, "workspaces")

        return await self.base._mutate(request, OPERATE, run, True, tenant_id,
                                       target=f"workspace:{workspace_id}")  # fmt: skip

    async def create_key(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        form = parse_form(await request.body())

        async def run(request: Request, session: Session) -> Response:
            note = note_of(request)
            threshold = percent(form.get("alert_threshold", ""))
            body = checked(KeyCreate, {
                "name": form.get("name", "").strip() or "default",
                "workspace": form.get("workspace", "").strip() or "default",
                "metadata": metadata_of(form.get("metadata", "")),
                "alert_threshold": threshold,
            })  # fmt: skip
            made = await self.keys.create_key(tenant_id, body)
            secret = made.pop("key")
            note.target, note.after = f"key:{made['id']}", made
            return self.base.page("key_created.html", request, session, key=made,
                                  secret=secret, tenant_id=tenant_id)  # fmt: skip

        return await self.base._mutate(request, OPERATE, run, True, tenant_id)

    async def revoke_key(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        key_id = request.path_params["key_id"]

        async def run(request: Request, session: Session) -> Response:
            note = note_of(request)
            key = await self.keys.tenancy.key(key_id)
            if key.tenant_id != tenant_id:  # as a missing key: nothing about another tenant
                raise NotFound(f"Key {key_id!r} not found.", code="key_not_found")
            note.before = key_json(key)
            note.after = await self.keys.revoke_key(key_id)
            return self._here(tenant_id, "keys")

        return await self.base._mutate(request, OPERATE, run, True, tenant_id,
                                       target=f"key:{key_id}")  # fmt: skip
