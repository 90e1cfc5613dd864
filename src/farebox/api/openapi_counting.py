"""``/openapi.json`` for the drop-in endpoints of issue [10] this module serves:
``/v1/completions`` (legacy text completions), ``/v1/messages/count_tokens`` and
``/v1/responses/input_tokens``. Built with ``openapi_data``'s pieces and merged after it."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI

from farebox.api.openapi_data import (
    INTEGER,
    NULLABLE_STRING,
    STRING,
    _completion,
    _model_schemas,
    _ok,
    _post,
    install_docs,
)
from farebox.api.schemas import CompletionRequest, CountTokensRequest, InputTokensRequest

JSON = dict[str, Any]

RESPONSES: JSON = {
    "farebox.TextCompletion": _completion(
        "text_completion",
        {
            "type": "object",
            "required": ["text", "index"],
            "properties": {"text": STRING, "index": INTEGER, "finish_reason": NULLABLE_STRING},
        },
    ),
    "farebox.MessageTokensCount": {
        "type": "object",
        "required": ["input_tokens"],
        "properties": {"input_tokens": INTEGER},
    },
    "farebox.InputTokenCount": {
        "type": "object",
        "required": ["object", "input_tokens"],
        "properties": {"object": {"const": "response.input_tokens"}, "input_tokens": INTEGER},
    },
}


def install_counting_docs(app: FastAPI) -> None:
    """Add the paths of this module to ``app.openapi()`` (after ``install_data_plane_docs``)."""
    install_docs(app, "/v1/completions", fragment)


def fragment() -> JSON:
    schemas = {
        **_model_schemas("openai", [CompletionRequest, InputTokensRequest]),
        **_model_schemas("anthropic", [CountTokensRequest]),
        **RESPONSES,
    }
    tenant: list[JSON] = [{"tenantKey": []}]
    either: list[JSON] = [{"anthropicKey": []}, {"tenantKey": []}]
    paths = {
        "/v1/completions": _post(
            "createCompletion", "Create a legacy text completion (OpenAI format), served "
            "through chat completions.", "openai.CompletionRequest",
            _ok("farebox.TextCompletion", True), "farebox.OpenAIError", tenant,
        ),
        "/v1/messages/count_tokens": _post(
            "countMessageTokens", "Count a Messages request's input tokens (Anthropic "
            "format); never billed.", "anthropic.CountTokensRequest",
            _ok("farebox.MessageTokensCount", False, False), "farebox.AnthropicError", either,
        ),
        "/v1/responses/input_tokens": _post(
            "countResponseInputTokens", "Count a Responses request's input tokens (OpenAI "
            "format); never billed.", "openai.InputTokensRequest",
            _ok("farebox.InputTokenCount", False, False), "farebox.OpenAIError", tenant,
        ),
    }  # fmt: skip
    copied: JSON = orjson.loads(orjson.dumps({"paths": paths, "components": {"schemas": schemas}}))
    return copied
