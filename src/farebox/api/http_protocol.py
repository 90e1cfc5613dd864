"""uvicorn's httptools protocol, with the request head bounded while it is parsed.

httptools sets no limit of its own on the request line and headers: a client can send
megabytes of header fields and uvicorn keeps them all before the app sees the request. This
protocol counts them as they are parsed and answers 431 (and closes the connection) as soon
as the head passes the app's ``InputLimits``: ``max_header_count`` fields, or
``max_header_bytes`` bytes of names and values (the request target counts too; one unfinished
field is bounded by the raw bytes of an unfinished head, four times that).

Use it with ``uvicorn --http farebox.api.http_protocol:BoundedHttpToolsProtocol`` (``farebox
serve`` does). The app's own check (``FareboxApp``) still applies under any other server.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from farebox.api.limits_input import InputLimits
from farebox.errors import HeadersTooLarge, openai_error_body


def _limits_of(app: Any) -> InputLimits:
    """The ``limits`` of the Farebox app, looking through middleware wrappers."""
    for _ in range(8):
        found = getattr(app, "limits", None)
        if isinstance(found, InputLimits):
            return found
        app = getattr(app, "app", None)
        if app is None:
            break
    return InputLimits()


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops parsing and re-raises it wrapped."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _limits_of(self.app)
        self._fields = 0
        self._head_bytes = 0
        self._raw_head = 0
        self._in_head = True
        self._refusal: str | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._fields = self._head_bytes = self._raw_head = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._count(0, len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(1, len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and self._refusal is None and not self.transport.is_closing():
            self._raw_head += len(data)  # all of it was head: the head is still unfinished
            if self._raw_head > 4 * self.limits.max_header_bytes:
                self._refusal = self._bytes_message(self._raw_head)
                self.send_400_response(self._refusal)

    def _count(self, fields: int, size: int) -> None:
        self._fields += fields
        self._head_bytes += size
        limits = self.limits
        if self._fields > limits.max_header_count:
            self._refusal = (
                f"The request has more than {limits.max_header_count} header fields; "
                f"the limit is {limits.max_header_count}."
            )
        elif self._head_bytes > limits.max_header_bytes:
            self._refusal = self._bytes_message(self._head_bytes)
        if self._refusal is not None:
            raise _HeadTooLarge(self._refusal)

    def _bytes_message(self, size: int) -> str:
        return (
            f"The request's header fields take at least {size} bytes; "
            f"the limit is {self.limits.max_header_bytes}."
        )

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse: a 431 when the head was too large."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        body = orjson.dumps(openai_error_body(HeadersTooLarge(self._refusal)))
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()
