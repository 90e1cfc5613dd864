"""Anthropic Messages upstream, spoken to in OpenAI shapes through ``translate``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from farebox.core.usage import from_anthropic
from farebox.errors import UpstreamError, UpstreamRejected
from farebox.http.client import HttpClient, SseEvent, error_for_status, error_from_response
from farebox.providers.base import (
    JSON,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    ForwardHeaders,
    StreamItem,
    UsageReport,
    keyed,
    with_headers,
)
from farebox.providers.translate import (
    AnthropicStreamTranslator,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
)

KEY = "x-api-key"  # the header its key goes in (a request's own, from the vault, wins)
DEFAULT_BASE_URL = "https://api.anthropic.com"
# Error types of mid-stream ``event: error`` frames, as the HTTP status they stand for.
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicProvider:
    """Serves OpenAI-format chat requests from ``{base_url}/v1/messages``.

    ``http`` is the app's shared client; without one the provider owns (and closes) its own.
    """

    kind = "anthropic"

    def __init__(
        self,
        name: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        http: HttpClient | None = None,
        anthropic_version: str = "2023-06-01",
        extra_headers: Mapping[str, str] | None = None,
        forward: ForwardHeaders | None = None,
    ) -> None:
        self.name = name
        self._forward = forward if forward is not None and forward.any() else None
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http if http is not None else HttpClient()
        self._url = f"{self.base_url}/v1/messages"
        self._count_url = f"{self.base_url}/v1/messages/count_tokens"
        headers = {k.lower(): v for k, v in (extra_headers or {}).items()}
        headers.update({"anthropic-version": anthropic_version, "content-type": "application/json"})
        if api_key:
            headers["x-api-key"] = api_key
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    async def chat(self, request: ChatRequest) -> ChatResult:
        body = openai_request_to_anthropic({**request.body, "stream": False})
        headers = keyed(with_headers(self._headers, request.headers), request.api_key, KEY)
        if self._forward is not None:  # forward_*_header: who is calling
            headers = self._forward.added(headers, request.caller)
        start = time.perf_counter()
        response = await self._http.post_json(
            self._url, headers, orjson.dumps(body), request.timeout_s
        )
        elapsed = (time.perf_counter() - start) * 1000.0
        if not 200 <= response.status < 300:
            raise error_from_response(response.status, response.headers, response.body, self.name)
        message = self._parse(response.body, response.status)
        result = anthropic_response_to_openai(message, created=int(time.time()))
        usage = from_anthropic(message.get("usage"))
        return ChatResult(body=result, usage=usage, upstream_ms=elapsed)

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        body = orjson.dumps(openai_request_to_anthropic({**request.body, "stream": True}))
        translator = AnthropicStreamTranslator(
            created=int(time.time()), model=request.body.get("model")
        )
        headers = keyed(with_headers(self._stream_headers, request.headers), request.api_key, KEY)
        if self._forward is not None:  # forward_*_header: who is calling
            headers = self._forward.added(headers, request.caller)
        async with self._http.stream(self._url, headers, body, request.timeout_s) as response:
            if not 200 <= response.status < 300:
                raise error_from_response(
                    response.status, response.headers, await response.read(), self.name
                )
            async for event in response.events():
                for chunk in translator.feed(self._event_data(event)):
                    yield chunk
                if translator.finished:
                    break
        if not translator.finished:
            raise UpstreamError("upstream stream ended before message_stop", extra=self._extra())
        yield UsageReport(usage=from_anthropic(translator.usage), chunk=translator.usage_chunk())

    async def count_tokens(self, body: JSON, timeout_s: float, api_key: str | None = None) -> int:
        """Anthropic's own count of an Anthropic-shaped request's input tokens
        (``POST /v1/messages/count_tokens``; ``body["model"]`` is the upstream model).
        ``api_key``: as ``ChatRequest.api_key``."""
        headers = keyed(self._headers, api_key, KEY)
        response = await self._http.post_json(
            self._count_url, headers, orjson.dumps(body), timeout_s
        )
        if not 200 <= response.status < 300:
            raise error_from_response(response.status, response.headers, response.body, self.name)
        tokens = self._parse(response.body, response.status).get("input_tokens")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise UpstreamError(
                "upstream sent no input_tokens count",
                upstream_status=response.status,
                extra=self._extra(),
            )
        return tokens

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        raise UpstreamRejected(
            "Anthropic has no embeddings endpoint; route embeddings to an OpenAI-compatible "
            "deployment",
            upstream_status=400,
            extra=self._extra(),
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _parse(self, body: bytes, status: int) -> JSON:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                "upstream sent invalid JSON", upstream_status=status, extra=self._extra()
            ) from exc
        if not isinstance(data, dict) or data.get("type") == "error":
            raise error_for_status(status, _error_object(data), None, self.name)
        return data

    def _event_data(self, event: SseEvent) -> JSON:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                "upstream sent an invalid stream frame", extra=self._extra()
            ) from exc
        if not isinstance(data, dict):
            raise UpstreamError("upstream sent a non-object stream frame", extra=self._extra())
        if event.event == "error" or data.get("type") == "error":
            error = _error_object(data)
            status = ERROR_TYPE_STATUS.get(str(error.get("type")), 500)
            raise error_for_status(status, error, None, self.name, mid_stream=True)
        return data

    def _extra(self) -> dict[str, Any]:
        return {"provider": self.name}


def _error_object(data: object) -> JSON:
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {"message": "malformed upstream response"}
