"""The real request and response schemas the data plane is tested against.

* The official OpenAI OpenAPI document (``../shared/reference/specs/openai-openapi.yaml``),
  restricted to what Farebox serves, with the document's own known faults corrected — each
  correction is listed in ``KNOWN_FAULTS`` with its reason.
* The Anthropic Messages request, as a JSON Schema written from wire-formats.md section 8.1
  (anthropic-sdk-python ``types/message_create_params.py``): Anthropic publishes no OpenAPI
  document for it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

JSON = dict[str, Any]

SPECS = Path(
    os.environ.get("FAREBOX_SPECS_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "reference" / "specs"
)
OPENAI_SPEC = SPECS / "openai-openapi.yaml"

# the operations Farebox serves, as the OpenAI document names them (Farebox mounts them at /v1)
SERVED = {"/chat/completions": ("post",), "/embeddings": ("post",), "/models": ("get",)}

# Faults of the OpenAI document itself, corrected before it judges Farebox (why, for each):
KNOWN_FAULTS = {
    "nullable": "3.0-style `nullable: true` in a 3.1 document: a 3.1 validator ignores it and "
    "rejects the null the API really sends (e.g. a stream chunk's `logprobs: null`); "
    "rewritten as `anyOf: [schema, {type: null}]`.",
    "base64-embeddings": "`Embedding.embedding` is typed as an array of numbers, but with "
    '`encoding_format: "base64"` the API returns a base64 string; a string is allowed too.',
    "discriminator-without-mapping": "`discriminator: {propertyName: type}` with no `mapping` "
    "means the value must be a schema's name (`ChatCompletionMessageToolCall`), but the API "
    "sends `type: function`; the `oneOf` alone already tells the branches apart, so such "
    "discriminators are dropped.",
    "sse-schema": "`text/event-stream` gives the chunk schema as `schema`, which in OpenAPI 3.1 "
    "describes each whole event (`{event, data, id}`), not the JSON in its `data`; rewritten "
    "as an `itemSchema` whose `data` is that JSON (`contentSchema`) or the final `[DONE]`.",
    "undocumented-4xx": "the operations list only 200: every 4xx the API answers (400 bad "
    "request, 401, 404 unknown model, 413, 429 rate limit or budget) is undocumented; those "
    "responses are checked for the OpenAI error shape instead.",
}


def require_spec() -> None:
    if not OPENAI_SPEC.is_file():
        pytest.skip(f"the OpenAI OpenAPI document is not at {OPENAI_SPEC} (set FAREBOX_SPECS_DIR)")


@functools.cache
def openai_spec() -> Mapping[str, Any]:
    """The whole document, parsed once per test process (treat it as read-only)."""
    require_spec()
    with OPENAI_SPEC.open("rb") as handle:
        loaded: JSON = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return loaded


def _rewrite(node: Any, visit: Callable[[JSON], JSON]) -> Any:
    """A copy of ``node`` with ``visit`` applied to every object, innermost first."""
    if isinstance(node, dict):
        return visit({k: _rewrite(v, visit) for k, v in node.items()})
    if isinstance(node, list):
        return [_rewrite(v, visit) for v in node]
    return node


def _corrected(schema: JSON) -> JSON:
    discriminator = schema.get("discriminator")
    if isinstance(discriminator, dict) and "mapping" not in discriminator:
        schema = {k: v for k, v in schema.items() if k != "discriminator"}
    if schema.get("nullable") is True:
        rest = {k: v for k, v in schema.items() if k != "nullable"}
        return {"anyOf": [rest, {"type": "null"}]}
    if "nullable" in schema and isinstance(schema["nullable"], bool):
        return {k: v for k, v in schema.items() if k != "nullable"}
    return schema


def _sse_items(operation: JSON) -> JSON:
    """A ``text/event-stream`` response's ``schema`` (the JSON of each event's ``data``) moved
    to where OpenAPI 3.1 readers look for it: an ``itemSchema`` describing each event."""
    for response in operation.get("responses", {}).values():
        stream = (
            response.get("content", {}).get("text/event-stream") if "content" in response else None
        )
        if isinstance(stream, dict) and "schema" in stream:
            data = {
                "anyOf": [
                    {"const": "[DONE]"},
                    {"contentMediaType": "application/json", "contentSchema": stream.pop("schema")},
                ]
            }
            stream["itemSchema"] = {
                "type": "object",
                "properties": {"data": data},
                "required": ["data"],
            }
    return operation


@functools.cache
def corrected_components() -> Mapping[str, Any]:
    """``components`` with the document's known faults corrected."""
    components = _rewrite(openai_spec()["components"], _corrected)
    embedding = components["schemas"]["Embedding"]["properties"]
    embedding["embedding"] = {"anyOf": [embedding["embedding"], {"type": "string"}]}
    return dict(components)


def served_document() -> JSON:
    """The OpenAI document restricted to the operations Farebox serves, faults corrected.

    Its server is ``/v1``, as Farebox mounts them."""
    spec = openai_spec()
    paths = {
        path: {
            method: _sse_items(_rewrite(operation, _corrected))
            for method, operation in spec["paths"][path].items()
            if method in methods
        }
        for path, methods in SERVED.items()
    }
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": [{"url": "/v1"}],
        "security": spec.get("security", []),
        "paths": paths,
        "components": dict(corrected_components()),
    }


def validator(component: str) -> Any:
    """A JSON Schema validator for one of the document's (corrected) components."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    root = {"components": dict(corrected_components())}
    resource = Resource.from_contents(root, default_specification=_draft202012())
    registry: Any = Registry().with_resource("urn:openai", resource)
    schema = {"$ref": f"urn:openai#/components/schemas/{component}"}
    return Draft202012Validator(schema, registry=registry)


def _draft202012() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


# --- Anthropic Messages (wire-formats.md 8.1) ------------------------------------------------

_CACHE_CONTROL = {
    "type": "object",
    "properties": {"type": {"const": "ephemeral"}, "ttl": {"enum": ["5m", "1h"]}},
    "required": ["type"],
}
_TEXT = {
    "type": "object",
    "properties": {
        "type": {"const": "text"},
        "text": {"type": "string"},
        "cache_control": _CACHE_CONTROL,
    },
    "required": ["type", "text"],
}
_IMAGE = {
    "type": "object",
    "properties": {
        "type": {"const": "image"},
        "source": {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": "base64"},
                        "media_type": {"enum": ["image/png", "image/jpeg", "image/gif"]},
                        "data": {"type": "string"},
                    },
                    "required": ["type", "media_type", "data"],
                },
                {
                    "type": "object",
                    "properties": {"type": {"const": "url"}, "url": {"type": "string"}},
                    "required": ["type", "url"],
                },
            ]
        },
    },
    "required": ["type", "source"],
}
_TOOL_USE = {
    "type": "object",
    "properties": {
        "type": {"const": "tool_use"},
        "id": {"type": "string"},
        "name": {"type": "string"},
        "input": {"type": "object"},
    },
    "required": ["type", "id", "name", "input"],
}
_TOOL_RESULT = {
    "type": "object",
    "properties": {
        "type": {"const": "tool_result"},
        "tool_use_id": {"type": "string"},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT}]},
        "is_error": {"type": "boolean"},
    },
    "required": ["type", "tool_use_id"],
}
_THINKING = {
    "type": "object",
    "properties": {
        "type": {"const": "thinking"},
        "thinking": {"type": "string"},
        "signature": {"type": "string"},
    },
    "required": ["type", "thinking", "signature"],
}

MESSAGES_REQUEST: JSON = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "role": {"enum": ["user", "assistant"]},
                    "content": {
                        "anyOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "items": {
                                    "oneOf": [_TEXT, _IMAGE, _TOOL_USE, _TOOL_RESULT, _THINKING]
                                },
                            },
                        ]
                    },
                },
                "required": ["role", "content"],
            },
        },
        "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT}]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "top_k": {"type": "integer", "minimum": 0},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "stream": {"type": "boolean"},
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "input_schema": {"type": "object"},
                    "cache_control": _CACHE_CONTROL,
                },
                "required": ["name", "input_schema"],
            },
        },
        "tool_choice": {
            "type": "object",
            "properties": {
                "type": {"enum": ["auto", "any", "tool", "none"]},
                "name": {"type": "string"},
                "disable_parallel_tool_use": {"type": "boolean"},
            },
            "required": ["type"],
        },
        "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
        "thinking": {
            "type": "object",
            "properties": {
                "type": {"enum": ["enabled", "disabled"]},
                "budget_tokens": {"type": "integer", "minimum": 1024},
            },
            "required": ["type"],
        },
        "service_tier": {"enum": ["auto", "standard_only"]},
        "cache_control": _CACHE_CONTROL,
    },
    "required": ["model", "max_tokens", "messages"],
}


def messages_document() -> JSON:
    """A one-operation OpenAPI 3.1 document for ``POST /v1/messages``, so the same generator
    that reads the OpenAI document can draw Anthropic bodies."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Anthropic Messages (from wire-formats.md 8.1)", "version": "1"},
        "paths": {
            "/v1/messages": {
                "post": {
                    "operationId": "createMessage",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": MESSAGES_REQUEST}},
                    },
                    "responses": {"200": {"description": "a message"}},
                }
            }
        },
    }
