"""Bounds on what a client may send: header count and size, body size, JSON nesting depth.

Checks cheap enough for every request. The ASGI edge (``api/gate.py``) applies the header
bounds to every request and the body bounds to the admin API; the data plane reads its bodies
with the same :func:`read_body`. Admin bodies are held to :func:`check_depth`; data-plane
bodies are bounded by their typed models and by what can be sent upstream (255 levels).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from farebox.errors import HeadersTooLarge, InvalidRequest, PayloadTooLarge


@dataclass(frozen=True, slots=True)
class InputLimits:
    """``server.max_body_bytes``, ``max_header_count``, ``max_header_bytes``, ``max_json_depth``."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_header_count: int = 100
    max_header_bytes: int = 16 * 1024
    max_json_depth: int = 64

    def body_too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body is larger than the limit of {self.max_body_bytes} bytes."
        )


def check_head(headers: list[tuple[bytes, bytes]], limits: InputLimits) -> None:
    """Refuse too many or too large headers (431), or a declared body over the limit (413)."""
    if len(headers) > limits.max_header_count:
        raise HeadersTooLarge(
            f"The request has {len(headers)} header fields; the limit is {limits.max_header_count}."
        )
    size = 0
    declared = None
    for name, value in headers:
        size += len(name) + len(value)
        if name == b"content-length":
            declared = value
    if size > limits.max_header_bytes:
        raise HeadersTooLarge(
            f"The request's header fields take {size} bytes; the limit is "
            f"{limits.max_header_bytes}."
        )
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise limits.body_too_large()


def json_depth(value: Any, stop_at: int | None = None) -> int:
    """How deeply ``value`` (parsed JSON) nests arrays and objects: ``1`` for ``{}``, ``0`` for
    a scalar. Iterative, so any depth is safe; stops counting once past ``stop_at``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if stop_at is not None and deepest > stop_at:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_depth(value: Any, limit: int, param: str | None = None) -> None:
    """A 400 naming ``param`` when ``value`` nests more than ``limit`` arrays and objects."""
    depth = json_depth(value, stop_at=limit)
    if depth > limit:
        where = f"'{param}'" if param else "The request body"
        raise InvalidRequest(
            f"{where} is nested too deeply: more than {limit} levels of arrays and objects.",
            param=param,
            code="nested_too_deeply",
        )


async def read_body(
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]], max_bytes: int
) -> bytes:
    """The whole request body, counted as it arrives: 413 as soon as it passes ``max_bytes``,
    before the rest is read, so an oversized body never sits in memory."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
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
