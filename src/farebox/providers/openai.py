"""OpenAI and OpenAI-compatible upstreams (OpenAI, Azure-style proxies, vLLM, Ollama...).

An upstream that speaks the Responses API (``responses: native``) is also sent ``/v1/responses``
requests as they are (``responses``, ``responses_stream``); the others get them translated to
chat completions by the request path."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from farebox.core.usage import from_openai, from_responses
from farebox.errors import UpstreamError
from farebox.http.client import (
    HttpClient,
    HttpResponse,
    error_for_status,
    error_from_response,
)
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

KEY = "authorization"  # the header its key goes in (a request's own, from the vault, wins)
_DONE = b"[DONE]"
# Mid-stream error objects carry no HTTP status; infer one so retry policy still works.
_STREAM_ERROR_STATUS = {"rate_limit_exceeded": 429, "invalid_request_error": 400}
# the Responses events that end a stream with its usage
_TERMINAL = ("response.completed", "response.incomplete")


class OpenAIProvider:
    """Speaks OpenAI chat-completions and embeddings to ``base_url`` (e.g. ".../v1")."""

    kind = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        http: HttpClient,
        extra_headers: Mapping[str, str] | None = None,
        responses: str = "translate",
        forward: ForwardHeaders | None = None,
    ) -> None:
        self.name = name
        self._forward = forward if forward is not None and forward.any() else None
        self.native_responses = responses == "native"
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._chat_url = f"{self.base_url}/chat/completions"
        self._embed_url = f"{self.base_url}/embeddings"
        self._responses_url = f"{self.base_url}/responses"
        self._headers = _build_headers(api_key, extra_headers)
        self._stream_headers = {**self._headers, "accept": "text/event-stream"}

    async def chat(self, request: ChatRequest) -> ChatResult:
        body = request.body if not request.body.get("stream") else {**request.body, "stream": False}
        response, elapsed = await self._post(self._chat_url, body, request)
        data = self._parse(response)
        return ChatResult(body=data, usage=from_openai(data.get("usage")), upstream_ms=elapsed)

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        response, elapsed = await self._post(self._embed_url, request.body, request)
        data = self._parse(response)
        return EmbedResult(body=data, usage=from_openai(data.get("usage")), upstream_ms=elapsed)

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        body = orjson.dumps(_stream_body(request.body))
        headers = keyed(with_headers(self._stream_headers, request.headers), request.api_key, KEY)
        if self._forward is not None:  # forward_*_header: who is calling
            headers = self._forward.added(headers, request.caller)
        async with self._http.stream(self._chat_url, headers, body, request.timeout_s) as response:
            if not 200 <= response.status < 300:
                raise error_from_response(
                    response.status, response.headers, await response.read(), self.name
                )
            finished = False
            async for event in response.events():
                if event.data == _DONE:
                    return
                for item in self._stream_items(event.data):
                    finished = finished or isinstance(item, UsageReport)
                    yield item
            if not finished:
                raise UpstreamError("upstream stream ended before [DONE]", extra=self._extra())

    async def responses(self, request: ChatRequest) -> ChatResult:
        """A non-streamed Responses request; the result's body is the Responses object."""
        body = {**request.body, "stream": False}
        response, elapsed = await self._post(self._responses_url, body, request)
        data = self._parse(response)
        return ChatResult(body=data, usage=from_responses(data.get("usage")), upstream_ms=elapsed)

    async def responses_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        """The upstream's Responses events; the terminal one (with the usage) comes as the
        chunk of the closing ``UsageReport``. A stream that ends without one was cut."""
        body = orjson.dumps({**request.body, "stream": True})
        headers = keyed(with_headers(self._stream_headers, request.headers), request.api_key, KEY)
        if self._forward is not None:  # forward_*_header: who is calling
            headers = self._forward.added(headers, request.caller)
        async with self._http.stream(
            self._responses_url, headers, body, request.timeout_s
        ) as response:
            if not 200 <= response.status < 300:
                raise error_from_response(
                    response.status, response.headers, await response.read(), self.name
                )
            async for frame in response.events():
                if frame.data == _DONE:
                    break
                event = self._frame(frame.data)
                kind = event.get("type")
                if kind in _TERMINAL:
                    usage = from_responses((event.get("response") or {}).get("usage"))
                    yield UsageReport(usage=usage, chunk=event)
                    return
                if kind in ("error", "response.failed"):
                    failed = event if kind == "error" else event.get("response") or {}
                    error = failed.get("error") if kind != "error" else failed
                    raise _stream_error(_error_fields(error), self.name)
                yield event
            raise UpstreamError("upstream stream ended before response.completed",
                                extra=self._extra())  # fmt: skip

    async def aclose(self) -> None:
        """The shared ``HttpClient`` belongs to the app, which closes it."""

    async def _post(
        self, url: str, body: JSON, request: ChatRequest | EmbedRequest
    ) -> tuple[HttpResponse, float]:
        start = time.perf_counter()
        headers = keyed(with_headers(self._headers, request.headers), request.api_key, KEY)
        if self._forward is not None:  # forward_*_header: who is calling
            headers = self._forward.added(headers, request.caller)
        response = await self._http.post_json(url, headers, orjson.dumps(body), request.timeout_s)
        elapsed = (time.perf_counter() - start) * 1000.0
        if not 200 <= response.status < 300:
            raise error_from_response(response.status, response.headers, response.body, self.name)
        return response, elapsed

    def _parse(self, response: HttpResponse) -> JSON:
        try:
            data = orjson.loads(response.body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                "upstream sent invalid JSON", upstream_status=response.status, extra=self._extra()
            ) from exc
        if not isinstance(data, dict):
            raise UpstreamError(
                "upstream sent a non-object JSON body",
                upstream_status=response.status,
                extra=self._extra(),
            )
        return data

    def _frame(self, data: bytes) -> JSON:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                "upstream sent an invalid stream frame", extra=self._extra()
            ) from exc
        if not isinstance(chunk, dict):
            raise UpstreamError("upstream sent a non-object stream frame", extra=self._extra())
        return chunk

    def _stream_items(self, data: bytes) -> list[StreamItem]:
        chunk = self._frame(data)
        if "error" in chunk:
            raise _stream_error(chunk["error"], self.name)
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            return [chunk]
        if not chunk.get("choices"):
            return [UsageReport(usage=from_openai(usage), chunk=chunk)]
        # some OpenAI-compatible servers put usage on the last content chunk: split it off
        final = {**chunk, "choices": [], "usage": usage}
        return [{**chunk, "usage": None}, UsageReport(usage=from_openai(usage), chunk=final)]

    def _extra(self) -> dict[str, Any]:
        return {"provider": self.name}


def _build_headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {k.lower(): v for k, v in (extra or {}).items()}
    headers["content-type"] = "application/json"
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _stream_body(body: JSON) -> JSON:
    options = body.get("stream_options")
    merged = {**options, "include_usage": True} if isinstance(options, dict) else None
    return {**body, "stream": True, "stream_options": merged or {"include_usage": True}}


def _error_fields(error: object) -> JSON:
    """The OpenAI error object of a Responses ``error`` event or a failed response."""
    fields = error if isinstance(error, dict) else {}
    return {"message": fields.get("message") or "the upstream response failed",
            "code": fields.get("code")}  # fmt: skip


def _stream_error(error: object, provider: str) -> UpstreamError:
    err = error if isinstance(error, dict) else {"message": str(error)}
    status = _STREAM_ERROR_STATUS.get(str(err.get("code")))
    status = status or _STREAM_ERROR_STATUS.get(str(err.get("type")), 500)
    return error_for_status(status, err, None, provider, mid_stream=True)
