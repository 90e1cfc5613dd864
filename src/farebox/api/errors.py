"""Render ``FareboxError`` in the format the caller's SDK expects."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from farebox.errors import FareboxError, http_status, openai_error_body


def anthropic_error_body(exc: FareboxError, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": exc.type, "message": exc.message}}
    body["error"].update(exc.extra)
    if exc.error_code:
        body["error"]["code"] = exc.error_code
    if request_id:
        body["request_id"] = request_id
    return body


def error_response(
    exc: FareboxError, request_id: str | None = None, *, flavor: str = "openai"
) -> Response:
    body = (
        anthropic_error_body(exc, request_id) if flavor == "anthropic" else openai_error_body(exc)
    )
    headers = dict(exc.headers)
    if request_id:
        headers["x-farebox-request-id"] = request_id
    return Response(
        orjson.dumps(body),
        status_code=http_status(exc),
        headers=headers,
        media_type="application/json",
    )
