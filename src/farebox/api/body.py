"""Read and validate JSON request bodies: size, content type, encoding, shapes."""

from __future__ import annotations

from typing import Any

import orjson

from farebox.api.fastpath import Incoming
from farebox.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


async def _read_body(incoming: Incoming, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await incoming.receive()
        if message["type"] != "http.request":
            raise InvalidRequest("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"The request body is larger than the limit of {max_bytes} bytes."
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(incoming: Incoming, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or a clear 4xx."""
    headers = incoming.headers
    content_type = headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type.lower() not in ("application/json", ""):
        raise UnsupportedMediaType(f"Content-Type must be application/json (got {content_type!r}).")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    raw = await _read_body(incoming, max_bytes)
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


def _type_error(field: str, expected: str, value: Any) -> InvalidRequest:
    got = type(value).__name__ if value is not None else "null"
    return InvalidRequest(f"'{field}' must be {expected} (got {got}).", param=field)


def _optional(body: dict[str, Any], field: str, types: tuple[type, ...], expected: str) -> None:
    value = body.get(field)
    if value is None:
        return
    if isinstance(value, bool) and bool not in types:
        raise _type_error(field, expected, value)
    if not isinstance(value, types):
        raise _type_error(field, expected, value)


def _model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("'model' is required.", param="model")
    if not isinstance(model, str) or not model.strip():
        raise _type_error("model", "a non-empty string", model)


def _positive_int(body: dict[str, Any], field: str) -> None:
    value = body.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{field}' must be a positive integer.", param=field)


def _messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("'messages' is required.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _type_error(where, "an object", message)
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.", param=f"{where}.role"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _type_error(f"{where}.content", "a string or an array of parts", content)


def validate_chat(body: dict[str, Any]) -> None:
    _model(body)
    _messages(body)
    _optional(body, "stream", (bool,), "a boolean")
    _optional(body, "stream_options", (dict,), "an object")
    _optional(body, "user", (str,), "a string")
    _optional(body, "temperature", (int, float), "a number")
    _optional(body, "top_p", (int, float), "a number")
    _optional(body, "tools", (list,), "an array")
    _optional(body, "stop", (str, list), "a string or an array of strings")
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    _positive_int(body, "n")
    if body.get("stream_options") and not body.get("stream"):
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )


def validate_embeddings(body: dict[str, Any]) -> None:
    _model(body)
    value = body.get("input")
    if value is None:
        raise InvalidRequest("'input' is required.", param="input")
    ok = isinstance(value, str) or (
        isinstance(value, list)
        and bool(value)
        and (
            all(isinstance(v, str) for v in value)
            or all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value)
        )
    )
    if not ok or value == "":
        raise InvalidRequest(
            "'input' must be a non-empty string, array of strings, or array of token arrays.",
            param="input",
        )
    _optional(body, "encoding_format", (str,), "a string")
    _positive_int(body, "dimensions")


ANTHROPIC_ROLES = ("user", "assistant")


def validate_messages(body: dict[str, Any]) -> None:
    """An Anthropic Messages request: the fields the translation relies on."""
    _model(body)
    if body.get("max_tokens") is None:
        raise InvalidRequest("'max_tokens' is required.", param="max_tokens")
    _positive_int(body, "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _type_error(where, "an object", message)
        if message.get("role") not in ANTHROPIC_ROLES:
            raise InvalidRequest(f"'{where}.role' must be user or assistant.", param=where)
        content = message.get("content")
        if not isinstance(content, str | list):
            raise _type_error(f"{where}.content", "a string or an array of blocks", content)
        if isinstance(content, list) and not all(isinstance(b, dict) for b in content):
            raise _type_error(f"{where}.content", "an array of objects", content)
    system = body.get("system")
    if system is not None and not (
        isinstance(system, str)
        or (isinstance(system, list) and all(isinstance(b, dict) and "text" in b for b in system))
    ):
        raise _type_error("system", "a string or an array of text blocks", system)
    _optional(body, "stream", (bool,), "a boolean")
    _optional(body, "temperature", (int, float), "a number")
    _optional(body, "top_p", (int, float), "a number")
    _optional(body, "tools", (list,), "an array")
    _optional(body, "stop_sequences", (list,), "an array of strings")
    _optional(body, "metadata", (dict,), "an object")
