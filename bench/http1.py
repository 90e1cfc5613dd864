"""Minimal HTTP/1.1 framing helpers shared by the mock upstream and the load generator.

Only what a benchmark needs: find the end of a head, read Content-Length, and walk a
chunked body. Everything works on a ``bytearray`` and offsets, so nothing is copied twice.
"""

from __future__ import annotations

INCOMPLETE = -1


def header_value(lower_head: bytes, name: bytes) -> bytes | None:
    """Return the value of header ``name`` (lower case, no colon) from a lower-cased head."""
    start = lower_head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = lower_head.find(b"\r\n", start)
    return lower_head[start : end if end >= 0 else len(lower_head)].strip()


def content_length(lower_head: bytes) -> int:
    """Content-Length of a head, or -1 when absent."""
    value = header_value(lower_head, b"content-length")
    return int(value) if value is not None else -1


def is_chunked(lower_head: bytes) -> bool:
    value = header_value(lower_head, b"transfer-encoding")
    return value is not None and b"chunked" in value


def chunked_end(buf: bytearray, pos: int, parts: list[bytes] | None = None) -> tuple[int, int]:
    """Walk a chunked body in ``buf`` starting at ``pos``.

    Returns ``(end, pos)``: ``end`` is the offset just past the body, or ``INCOMPLETE``;
    ``pos`` is where to resume next time (the start of the first unread chunk). When
    ``parts`` is given, each chunk's payload is appended to it as it is passed.
    """
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return INCOMPLETE, pos
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        if size == 0:
            return _trailer_end(buf, eol + 2), pos
        data_end = eol + 2 + size
        if len(buf) < data_end + 2:
            return INCOMPLETE, pos
        if parts is not None:
            parts.append(bytes(buf[eol + 2 : data_end]))
        pos = data_end + 2


def _trailer_end(buf: bytearray, start: int) -> int:
    if len(buf) < start + 2:
        return INCOMPLETE
    if buf[start : start + 2] == b"\r\n":
        return start + 2
    end = buf.find(b"\r\n\r\n", start)
    return INCOMPLETE if end < 0 else end + 4


def chunk(payload: bytes) -> bytes:
    """Frame one payload as an HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


LAST_CHUNK = b"0\r\n\r\n"
