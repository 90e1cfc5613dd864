"""The data plane in ``/openapi.json``: ``/v1/chat/completions``, ``/v1/responses``,
``/v1/messages``, ``/v1/embeddings``, ``/v1/models``, ``/v1/me`` and ``/v1/me/requests``.

The request bodies are generated from the typed models the edge validates with (so the
document and the validation cannot drift apart); the responses list the statuses the data
plane actually serves, in the caller's error format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from farebox.api.openapi_doc import ERROR_SCHEMA
from farebox.api.schemas import (
    ChatCompletionRequest,
    EmbeddingRequest,
    MessagesRequest,
    ResponsesRequest,
)

JSON = dict[str, Any]
REF = "#/components/schemas/"
TAG = "Data plane"
STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
INTEGER = {"type": "integer"}


def install_data_plane_docs(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the data plane too (built once, on first use)."""
    install_docs(app, "/v1/chat/completions", data_plane)


def install_docs(app: FastAPI, marker: str, fragment: Callable[[], JSON]) -> None:
    """Make ``app.openapi()`` merge ``fragment()`` in, once: when ``marker`` (one of its
    paths) is not in the document yet."""
    base: Callable[[], JSON] = app.openapi

    def openapi() -> JSON:
        document = base()
        if marker not in document.get("paths", {}):
            merge(document, fragment())
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def merge(document: JSON, extra: JSON) -> None:
    """Add ``extra``'s paths and components to ``document``, never replacing what is there."""
    document.setdefault("paths", {}).update(extra["paths"])
    components = document.setdefault("components", {})
    for section, items in extra["components"].items():
        found = components.setdefault(section, {})
        for name, value in items.items():
            found.setdefault(name, value)
    tags = document.setdefault("tags", [])
    if not any(t.get("name") == TAG for t in tags):
        tags.append({"name": TAG, "description": "OpenAI- and Anthropic-compatible API."})


def data_plane() -> JSON:
    """The data plane's paths and components, as an OpenAPI 3.1 fragment."""
    schemas = {
        **_model_schemas("openai", [ChatCompletionRequest, EmbeddingRequest]),
        **_model_schemas("anthropic", [MessagesRequest]),
        **_model_schemas("responses", [ResponsesRequest]),
        **RESPONSES,
    }
    fragment = {
        "paths": _paths(),
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
    # a copy of its own: nothing done to one document can reach this module's constants
    copied: JSON = orjson.loads(orjson.dumps(fragment))
    return copied


def _model_schemas(prefix: str, models: list[type[BaseModel]]) -> JSON:
    """The JSON Schemas of ``models`` and everything they use, named ``prefix.Name``."""
    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template=f"{REF}{prefix}.{{model}}"
    )
    return {f"{prefix}.{name}": schema for name, schema in top.get("$defs", {}).items()}


# responses ------------------------------------------------------------------------------


def _list_of(item: JSON, **more: JSON) -> JSON:
    """An OpenAI list object, ``{"object": "list", "data": [item, ...]}``, and ``more``."""
    return {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": item},
            **more,
        },
    }


def _completion(kind: str, choice: JSON) -> JSON:
    """A completion object (``object`` is ``kind``: chat or legacy text) of ``choice`` items."""
    return {
        "type": "object",
        "required": ["object", "choices"],
        "properties": {
            "id": NULLABLE_STRING,
            "object": {"const": kind},
            "created": INTEGER,
            "model": NULLABLE_STRING,
            "choices": {"type": "array", "items": choice},
            "usage": {"type": ["object", "null"]},
        },
    }


def _json(schema: str) -> JSON:
    """A JSON body of the named component schema."""
    return {"application/json": {"schema": {"$ref": f"{REF}{schema}"}}}


RESPONSES: JSON = {
    "farebox.OpenAIError": {k: v for k, v in ERROR_SCHEMA.items() if k != "title"},
    "farebox.AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": STRING, "message": STRING, "code": STRING},
            },
            "request_id": STRING,
        },
    },
    "farebox.ChatCompletion": _completion("chat.completion", {"type": "object"}),
    "farebox.Response": {
        "type": "object",
        "required": ["id", "object", "status", "output"],
        "properties": {
            "id": STRING,
            "object": {"const": "response"},
            "created_at": INTEGER,
            "status": {"enum": ["completed", "incomplete"]},
            "model": NULLABLE_STRING,
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
        },
    },
    "farebox.ResponseDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {"id": STRING, "object": {"const": "response"}, "deleted": {"const": True}},
    },
    "farebox.ResponseItemList": _list_of(
        {"type": "object", "required": ["id", "type"], "properties": {"id": STRING}},
        first_id=NULLABLE_STRING,
        last_id=NULLABLE_STRING,
        has_more={"type": "boolean"},
    ),
    "farebox.Message": {
        "type": "object",
        "required": ["type", "role", "content"],
        "properties": {
            "id": NULLABLE_STRING,
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "model": NULLABLE_STRING,
            "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": NULLABLE_STRING,
            "usage": {"type": "object"},
        },
    },
    "farebox.EmbeddingList": _list_of(
        {
            "type": "object",
            "required": ["object", "index", "embedding"],
            "properties": {
                "object": {"const": "embedding"},
                "index": INTEGER,
                "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, STRING]},
            },
        },
        model=NULLABLE_STRING,
        usage={"type": "object"},
    ),
    "farebox.ModelList": _list_of(
        {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": STRING,
                "object": {"const": "model"},
                "created": INTEGER,
                "owned_by": STRING,
            },
        }
    ),
    "farebox.Me": {
        "type": "object",
        "required": ["object", "tenant", "key", "plan", "models", "rate_limits", "budgets"],
        "properties": {
            "object": {"const": "farebox.me"},
            "tenant": {"type": "object", "required": ["id"]},
            "key": {"type": "object", "required": ["id", "kind"]},
            "plan": STRING,
            "models": {"type": "array", "items": STRING},
            "max_tokens": {"type": ["integer", "null"]},
            "policy": {"type": "object"},
            "client_ip": NULLABLE_STRING,
            "rate_limits": {"type": "array", "items": {"type": "object"}},
            "budgets": {"type": "array", "items": {"type": "object"}},
            "cache": {  # as GET /admin/v1/tenants/{id}/cache, this UTC month (api/admin/cache.py)
                "type": "object",
                "required": [
                    "tenant",
                    "entries",
                    "bytes",
                    "hits",
                    "misses",
                    "hit_rate",
                    "saved_usd",
                    "since",
                    "until",
                ],
                "properties": {
                    "tenant": STRING,
                    "entries": {"type": ["integer", "null"]},
                    "bytes": {"type": ["integer", "null"]},
                    "hits": INTEGER,
                    "misses": INTEGER,
                    "hit_rate": NULLABLE_STRING,
                    "saved_usd": STRING,
                    "since": STRING,
                    "until": STRING,
                },
            },  # fmt: skip
        },
    },
    "farebox.RequestList": _list_of(
        {
            "type": "object",
            "required": [
                "time",
                "request_id",
                "tenant",
                "status",
                "tokens",
                "cost_usd",
                "revenue_usd",
                "metadata",
            ],
        },
        next_cursor=NULLABLE_STRING,
    ),  # fmt: skip
    # issue 15: requests with guardrail findings (never the matched text)
    "farebox.FindingList": _list_of(
        {
            "type": "object",
            "required": ["request_id", "tenant_id", "key_id", "status", "at", "findings"],
            "properties": {
                "findings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["detector", "category", "action", "score", "where"],
                    },
                },
            },
        },
        next_cursor=NULLABLE_STRING,
    ),  # fmt: skip
}

SECURITY_SCHEMES: JSON = {
    "tenantKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant API key, or a JWT of the identity provider in `auth.jwt`.",
    },
    "anthropicKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "A tenant API key, as the Anthropic SDK sends it.",
    },
}

ERRORS: Mapping[str, str] = MappingProxyType(
    {
        "400": "The body is not a valid request: `param` names the offending field.",
        "401": "No API key, or an unknown, expired or revoked one; or a refused JWT (`code` "
        "`token_*` says why, `unknown_tenant` when its tenant does not exist).",
        "403": "The plan does not allow this model or tool, the tenant or key is paused, or the "
        "host names another tenant (`tenant_host_mismatch`).",
        "404": "No such model.",
        "413": "The body is larger than the configured limit.",
        "415": "The body is not `application/json`.",
        "429": "A rate limit or a budget is exhausted (`Retry-After` says when to retry).",
        "4XX": "The upstream refused the request as the caller's error; its status is passed on.",
        "500": "An internal error before the request was sent upstream; nothing was billed.",
        "502": "The upstream failed (`upstream_error`), or a provider adapter or translator did "
        "(`upstream_translation_failed`, not to be retried).",
        "503": "No deployment is available, or the gateway's shared state cannot be reached.",
        "504": "The upstream timed out.",
    }
)
POST_ERRORS = ("400", "401", "403", "404", "413", "415", "429", "4XX", "500", "502", "503", "504")
GET_ERRORS = ("401", "403", "500", "503")


def _headers(*names: str) -> JSON:
    described = {
        "x-farebox-request-id": "The request's id, also in the ledger and the logs.",
        "x-farebox-model": "The model that served the request.",
        "x-farebox-cost-usd": "What the request cost, in USD.",
        "x-farebox-budget-remaining-usd": "What is left of the tightest budget, or `unlimited`.",
        "Retry-After": "Seconds to wait before retrying.",
    }
    return {n: {"description": described[n], "schema": STRING} for n in names}


def _errors(statuses: tuple[str, ...], error: str) -> JSON:
    out = {}
    for status in statuses:
        names = ("x-farebox-request-id", "Retry-After") if status == "429" else ()
        out[status] = {
            "description": ERRORS[status],
            "headers": _headers(*names),
            "content": _json(error),
        }
    return out


def _ok(schema: str, stream: bool, billed: bool = True) -> JSON:
    content: JSON = _json(schema)
    if stream:  # any event: OpenAI chunks then [DONE], or Anthropic's named events
        content["text/event-stream"] = {"schema": {"description": "Server-sent events."}}
    names = ["x-farebox-request-id"]
    if billed:
        names += ["x-farebox-model", "x-farebox-cost-usd", "x-farebox-budget-remaining-usd"]
    return {"description": "OK", "headers": _headers(*names), "content": content}


def _post(op: str, summary: str, body: str, ok: JSON, error: str, security: list[JSON]) -> JSON:
    return {
        "post": {
            "operationId": op,
            "summary": summary,
            "tags": [TAG],
            "security": security,
            "requestBody": {
                "required": True,
                "content": _json(body),
            },
            "responses": {"200": ok, **_errors(POST_ERRORS, error)},
        }
    }


def _get(op: str, summary: str, ok: JSON) -> JSON:
    responses = {"200": ok, **_errors(GET_ERRORS, "farebox.OpenAIError")}
    return {
        "get": {
            "operationId": op,
            "summary": summary,
            "tags": [TAG],
            "security": [{"tenantKey": []}],
            "responses": responses,
        }
    }


def _stored_paths() -> JSON:
    """``/v1/responses/{response_id}`` (GET, DELETE) and its ``input_items`` (GET): 404 for an
    unknown, expired or another tenant's id."""
    stored = [{"name": "response_id", "in": "path", "required": True, "schema": STRING}]
    page = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                    "maximum": 100}},
        {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
        {"name": "after", "in": "query", "schema": STRING},
    ]  # fmt: skip
    ops = {
        "get": _get("getResponse", "A stored response.", _ok("farebox.Response", False, False)),
        "delete": _get("deleteResponse", "Delete a stored response.",
                       _ok("farebox.ResponseDeleted", False, False)),
        "items": _get("listInputItems", "The input items of a stored response.",
                      _ok("farebox.ResponseItemList", False, False)),
    }  # fmt: skip
    for op in ops.values():
        op["get"]["responses"].update(_errors(("400", "404"), "farebox.OpenAIError"))
    ops["items"]["get"]["parameters"] = page
    return {
        "/v1/responses/{response_id}": {
            "parameters": stored, "get": ops["get"]["get"], "delete": ops["delete"]["get"],
        },
        "/v1/responses/{response_id}/input_items": {"parameters": stored, **ops["items"]},
    }  # fmt: skip


def _paths() -> JSON:
    tenant: list[JSON] = [{"tenantKey": []}]
    either: list[JSON] = [{"anthropicKey": []}, {"tenantKey": []}]
    openai_error, anthropic_error = "farebox.OpenAIError", "farebox.AnthropicError"
    return {
        "/v1/chat/completions": _post(
            "createChatCompletion", "Create a chat completion (OpenAI format).",
            "openai.ChatCompletionRequest", _ok("farebox.ChatCompletion", True),
            openai_error, tenant,
        ),
        "/v1/responses": _post(
            "createResponse", "Create a model response (OpenAI Responses format).",
            "responses.ResponsesRequest", _ok("farebox.Response", True),
            openai_error, tenant,
        ),
        "/v1/messages": _post(
            "createMessage", "Create a message (Anthropic format).",
            "anthropic.MessagesRequest", _ok("farebox.Message", True),
            anthropic_error, either,
        ),
        "/v1/embeddings": _post(
            "createEmbedding", "Create embeddings (OpenAI format).",
            "openai.EmbeddingRequest", _ok("farebox.EmbeddingList", False),
            openai_error, tenant,
        ),
        "/v1/models": _get(
            "listModels", "The models this key may call.", _ok("farebox.ModelList", False, False)
        ),
        **_stored_paths(),
        "/v1/me": _get(
            "getMe", "This key: its tenant, plan, policy, rate limits and budgets.",
            _ok("farebox.Me", False, False),
        ),
        "/v1/me/requests": _my_requests(),
        "/v1/me/guardrails/findings": _my_findings(),
    }  # fmt: skip


def _my_requests() -> JSON:
    """``GET /v1/me/requests``: the key's tenant's request log (``api/admin/requests.py``)."""
    texts = ("status", "key", "user", "feature", "model", "cache", "cursor")
    params: list[JSON] = [
        {"name": "start", "in": "query", "schema": STRING,
         "description": "unix seconds or ISO 8601 (UTC when no zone is given), inclusive"},
        {"name": "end", "in": "query", "schema": STRING, "description": "as start, exclusive"},
        *({"name": n, "in": "query", "schema": {"type": "string", "minLength": 1}}
          for n in texts),
        {"name": "tag", "in": "query", "description": "name:value, a metadata tag",
         "schema": {"type": "string", "pattern": "^[^:]+:"}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
    ]  # fmt: skip
    op = _get(
        "listMyRequests",
        "This key's tenant's request log, newest first; pass "
        "next_cursor as cursor for the next page.",
        _ok("farebox.RequestList", False, False),
    )
    op["get"]["parameters"] = params
    op["get"]["responses"].update(_errors(("400",), "farebox.OpenAIError"))
    return op


def _my_findings() -> JSON:
    """``GET /v1/me/guardrails/findings``: the key's tenant's requests with guardrail findings
    (``api/admin/guardrails.py``)."""
    params: list[JSON] = [
        {"name": "from", "in": "query", "schema": STRING,
         "description": "unix seconds or ISO 8601 (UTC when no zone is given), inclusive"},
        {"name": "to", "in": "query", "schema": STRING, "description": "as from, exclusive"},
        *({"name": n, "in": "query", "schema": {"type": "string", "minLength": 1}}
          for n in ("key", "detector", "category", "cursor")),
        {"name": "action", "in": "query",
         "schema": {"type": "string", "enum": ["flagged", "redacted", "blocked"]}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
    ]  # fmt: skip
    op = _get(
        "listMyGuardrailFindings",
        "This key's tenant's requests with guardrail findings, newest first (detector, "
        "category, action, score, where; never the matched text); pass next_cursor as cursor "
        "for the next page.",
        _ok("farebox.FindingList", False, False),
    )
    op["get"]["parameters"] = params
    op["get"]["responses"].update(_errors(("400",), "farebox.OpenAIError"))
    return op
