"""How a chat result leaves the gateway for a legacy text-completions client
(``POST /v1/completions``): ``text_completion`` objects, whole or streamed (the shapes are
``farebox.providers.translate_completions``'s)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from farebox.core.records import LedgerEntry
from farebox.errors import FareboxError, openai_error_body
from farebox.gateway.stream_meter import DONE, sse, usage_chunk
from farebox.providers.translate_completions import (
    chat_chunk_to_completion,
    chat_response_to_completion,
)

JSON = dict[str, Any]


def completion_body(body: JSON, request_id: str) -> bytes:
    return orjson.dumps(chat_response_to_completion(body, request_id))


class CompletionsStream:
    """Streamed ``text_completion`` chunks; usage (with ``farebox_cost_usd``) when the client
    asked for ``stream_options.include_usage``."""

    def __init__(self, body: Mapping[str, Any], request_id: str) -> None:
        self._usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._request_id = request_id

    def chunk(self, item: JSON) -> bytes:
        if not self._usage:
            item.pop("usage", None)
        out = chat_chunk_to_completion(item, self._request_id)
        return sse(out) if out is not None else b""

    def usage(self, chunk: Mapping[str, Any], entry: LedgerEntry) -> bytes:
        if not self._usage:
            return b""
        out = chat_chunk_to_completion(usage_chunk(chunk, entry.cost), self._request_id)
        return sse(out) if out is not None else b""

    def done(self) -> bytes:
        return DONE

    def error(self, error: FareboxError) -> bytes:
        return sse(openai_error_body(error))
