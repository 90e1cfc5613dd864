"""The OpenAPI document, made to tell the truth about the admin API.

FastAPI's generated document says a bad request is a 422 with its own ``detail`` shape and
lists no other failure. Farebox answers bad input with 400 and the OpenAI error object, every
admin operation needs an admin key (401) whose role allows it (403; 404 for a tenant_admin
outside its tenant), any request may be too large (413) or carry too many
headers (431), and operations on a named tenant or key may not find it (404). This module
rewrites the admin operations' responses accordingly and declares the bearer scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
STATUS_TEXT = MappingProxyType(
    {
        400: "Invalid request: the message and `param` name the problem.",
        401: "The admin key is missing or wrong.",
        403: "The admin key's role lacks what the operation needs (`x-farebox-access`): "
        "code `insufficient_role`, with `needed_role`; a tenant_admin beyond its plan too.",
        404: "No such tenant, key or incident; for a tenant_admin, also anything outside its "
        "own tenant, and every operation not open to it.",
        409: "It already exists, or it changed meanwhile.",
        413: "The request body is larger than `server.max_body_bytes`.",
        431: "Too many header fields, or too many bytes of them.",
        501: "The credential vault needs the `farebox[identity]` extra (cryptography), which "
        "this install lacks: code `vault_unavailable`.",
        503: "A backend this operation needs (the response cache's Redis) did not answer.",
    }
)
# Statuses beyond the common ones, per (method, path template).
EXTRA_STATUSES: Mapping[tuple[str, str], tuple[int, ...]] = MappingProxyType(
    {
        ("post", "/admin/v1/tenants"): (409,),
        ("post", "/admin/v1/tenants/{tenant_id}/keys"): (409,),
        ("post", "/admin/v1/service-keys"): (409,),
        ("patch", "/admin/v1/tenants/{tenant_id}"): (409,),
        ("post", "/admin/v1/tenants/{tenant_id}/budget-increases"): (409,),
        ("patch", "/admin/v1/keys/{key_id}"): (409,),
        ("delete", "/admin/v1/tenants/{tenant_id}/cache"): (503,),
        # issue 14: the vault (a name taken; a concurrent rotation; no cryptography installed)
        ("post", "/admin/v1/integrations"): (409, 501),
        ("get", "/admin/v1/integrations"): (501,),
        ("post", "/admin/v1/integrations/rekey"): (501,),
        ("post", "/admin/v1/integrations/{name}/rotate"): (409, 501),
        ("delete", "/admin/v1/integrations/{name}"): (501,),
        ("put", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"): (409, 501),
        ("get", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"): (501,),
        ("delete", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"): (501,),
        ("post", "/admin/v1/tenants/{tenant_id}/workspaces"): (409,),
        ("patch", "/admin/v1/tenants/{tenant_id}/workspaces/{workspace_id}"): (409,),
        ("delete", "/admin/v1/tenants/{tenant_id}/workspaces/{workspace_id}"): (409,),
    }
)


def _error(status: int) -> dict[str, Any]:
    return {
        "description": STATUS_TEXT[status],
        "content": {"application/json": {"schema": dict(ERROR_REF)}},
    }


def _admin_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    had_validation = responses.pop("422", None) is not None
    statuses = [401, 403, 404, 413, 431, *EXTRA_STATUSES.get((method, path), ())]  # 403, 404: roles
    if had_validation or operation.get("parameters") or operation.get("requestBody"):
        statuses.append(400)
    for status in sorted(set(statuses)):
        responses.setdefault(str(status), _error(status))
    operation["security"] = [{"adminKey": []}]


def _webhook_operation(operation: dict[str, Any]) -> None:
    """A billing webhook: its signature is its credential (no admin key); a bad signature or
    body is a 400, an unknown sink a 404, never FastAPI's 422."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    for status in (400, 404, 413):
        responses.setdefault(str(status), _error(status))


def _drop_unused(schemas: dict[str, Any], doc: dict[str, Any], names: tuple[str, ...]) -> None:
    """Remove FastAPI's 422 schemas when no operation refers to them any more."""
    removed = {name: schemas.pop(name) for name in names if name in schemas}
    text = orjson.dumps(doc)
    if any(f"#/components/schemas/{name}".encode() in text for name in removed):
        schemas.update(removed)


def farebox_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: FastAPI's document, with the admin operations' failures stated."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Error"] = orjson.loads(orjson.dumps(ERROR_SCHEMA))  # a copy per document
        components["securitySchemes"] = {
            "adminKey": {"type": "http", "scheme": "bearer", "description": "FAREBOX_ADMIN_KEY"}
        }
        for path, item in doc.get("paths", {}).items():
            for method, operation in item.items():
                if path.startswith("/admin/"):
                    _admin_operation(method, path, operation)
                elif path.startswith("/billing/"):
                    _webhook_operation(operation)
        _drop_unused(schemas, doc, ("HTTPValidationError", "ValidationError"))
        app.openapi_schema = doc
        return doc

    return build
