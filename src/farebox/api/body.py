"""Read and validate JSON request bodies: size, content type, encoding, shapes."""

from __future__ import annotations

from typing import Any

import orjson

from farebox.api.fastpath import Incoming
from farebox.api.limits_input import read_body
from farebox.api.schemas import (
    check_chat,
    check_completion,
    check_count_tokens,
    check_embeddings,
    check_input_tokens,
    check_messages,
    check_responses,
)
from farebox.errors import InvalidRequest, UnsupportedMediaType

__all__ = [
    "read_json",
    "validate_chat",
    "validate_completion",
    "validate_count_tokens",
    "validate_embeddings",
    "validate_input_tokens",
    "validate_messages",
    "validate_responses",
]


async def read_json(incoming: Incoming, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or a clear 4xx."""
    headers = incoming.headers
    content_type = headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type.lower() not in ("application/json", ""):
        raise UnsupportedMediaType(f"Content-Type must be application/json (got {content_type!r}).")
    # a declared Content-Length over the limit was refused with the head (``check_head``)
    raw = await read_body(incoming.receive, max_bytes)
    if not raw.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid UTF-8 JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        orjson.dumps(data)  # it will be sent upstream: it must encode (depth <= 255)
    except orjson.JSONEncodeError:
        raise InvalidRequest("The request body is nested too deeply.") from None
    return data


# The body's shape, checked against the typed models before anything is reserved.
validate_chat = check_chat
validate_embeddings = check_embeddings
validate_messages = check_messages
validate_completion = check_completion
validate_count_tokens = check_count_tokens
validate_input_tokens = check_input_tokens
validate_responses = check_responses
