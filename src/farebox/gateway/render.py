"""How a result leaves the gateway (``Reply``, ``StreamReply``): in the OpenAI format, or in
the Anthropic Messages format for clients on ``/v1/messages``, or as legacy ``text_completion``
objects for clients on ``/v1/completions`` (``render_legacy``). The request path works in OpenAI
shapes throughout; only the bytes sent to the client differ. Clients on ``/v1/responses`` get
the OpenAI Responses format (an object, or its event stream) the same way; when a native
deployment (``responses: native``) answered, its own Responses object or events are passed on
(``render_native``, ``NativeResponsesStream``) with Farebox's response id and cost."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry
from farebox.core.usage import Usage, from_openai, usage_of
from farebox.errors import FareboxError, openai_error_body
from farebox.gateway.render_legacy import CompletionsStream, completion_body
from farebox.gateway.stream_meter import DONE, sse, usage_chunk
from farebox.providers.translate_responses import (
    chat_to_response,
    response_object,
    responses_usage,
)
from farebox.providers.translate_responses_stream import ChatStreamToResponses, Event
from farebox.providers.translate_reverse import openai_response_to_anthropic
from farebox.providers.translate_stream_reverse import OpenAIStreamToAnthropic, encode

JSON = dict[str, Any]


@dataclass(slots=True)
class Reply:
    body: bytes
    headers: dict[str, str]
    status: int = 200


@dataclass(slots=True)
class StreamReply:
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


class StreamRenderer(Protocol):
    def chunk(self, item: JSON) -> bytes: ...

    def usage(self, chunk: Mapping[str, Any], entry: LedgerEntry) -> bytes:
        """The stream's usage, once its ledger entry is written."""
        ...

    def done(self) -> bytes: ...

    def error(self, error: FareboxError) -> bytes: ...


class OpenAIStream:
    def __init__(self, body: Mapping[str, Any]) -> None:
        self._usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(self, item: JSON) -> bytes:
        if not self._usage:
            item.pop("usage", None)
        return sse(item)

    def usage(self, chunk: Mapping[str, Any], entry: LedgerEntry) -> bytes:
        return sse(usage_chunk(chunk, entry.cost)) if self._usage else b""

    def done(self) -> bytes:
        return DONE

    def error(self, error: FareboxError) -> bytes:
        return sse(openai_error_body(error))


class AnthropicStream:
    """Anthropic Messages events; usage always goes in ``message_delta``."""

    def __init__(self, model: str, request_id: str) -> None:
        self._events = OpenAIStreamToAnthropic(model=model, message_id=message_id(request_id))

    def chunk(self, item: JSON) -> bytes:
        return b"".join(encode(name, data) for name, data in self._events.feed(item))

    def usage(self, chunk: Mapping[str, Any], entry: LedgerEntry) -> bytes:
        return b"".join(encode(n, d) for n, d in self._events.finish(usage_of(entry)))

    def done(self) -> bytes:
        return b"".join(encode(n, d) for n, d in self._events.finish())

    def error(self, error: FareboxError) -> bytes:
        kind = "overloaded_error" if error.status in (502, 503, 529) else "api_error"
        return encode(*self._events.error(error.message, kind))


class ResponsesStream:
    """OpenAI Responses events; usage (with ``farebox_cost_usd``) goes in the last event,
    sent once the ledger entry is written."""

    def __init__(self, model: str, request_id: str, echo: JSON | None) -> None:
        response = response_object(response_id(request_id), int(time.time()), model, echo)
        self._events = ChatStreamToResponses(response)
        self._usage: Usage | None = None
        self._cost: str | None = None

    def chunk(self, item: JSON) -> bytes:
        return _frames(self._events.feed(item))

    def usage(self, chunk: Mapping[str, Any], entry: LedgerEntry) -> bytes:
        self._usage, self._cost = usage_of(entry), format_usd(entry.cost)
        return b""

    def done(self) -> bytes:
        return _frames(self._events.finish(self._usage, self._cost))

    def error(self, error: FareboxError) -> bytes:
        return _frames(self._events.fail(error.message, error.error_code or error.type))


# what a native answer shows as the client asked, not as Farebox asked upstream
CLIENT_ECHO = ("store", "previous_response_id")
TERMINAL = ("response.completed", "response.incomplete")


class NativeResponsesStream:
    """A native deployment's own Responses events, passed on: the response they carry gets
    Farebox's id, and the terminal one the usage with ``farebox_cost_usd``, once the ledger
    entry is written. A failure after the first byte ends it with ``response.failed``."""

    def __init__(self, model: str, request_id: str, echo: JSON | None) -> None:
        self._echo = client_echo(echo)
        self._response = response_object(
            response_id(request_id), int(time.time()), model, echo or {}
        )
        self._output: list[JSON] = []  # the items done so far
        self._seq = -1
        self._ended = False

    def _ours(self, response: JSON) -> JSON:
        return {**response, "id": self._response["id"], **self._echo}

    def _frame(self, event: JSON) -> bytes:
        seq = event.get("sequence_number")
        self._seq = seq if isinstance(seq, int) else self._seq + 1
        return encode(str(event.get("type")), event)

    def chunk(self, item: JSON) -> bytes:
        response = item.get("response")
        if isinstance(response, dict):
            item["response"] = self._response = self._ours(response)
        elif item.get("type") == "response.output_item.done" and isinstance(item.get("item"), dict):
            self._output.append(item["item"])
        return self._frame(item)

    def usage(self, chunk: Mapping[str, Any], entry: LedgerEntry) -> bytes:
        event = dict(chunk)
        if event.get("type") not in TERMINAL:  # upstream never sent one: ours, from the entry
            done = {**self._response, "status": "completed", "output": self._output}
            event = {"type": "response.completed", "sequence_number": self._seq + 1,
                     "response": done}  # fmt: skip
        response = self._ours(event.get("response") or {})
        event["response"] = {**response, "usage": costed_usage(response.get("usage"), entry)}
        self._ended = True
        return self._frame(event)

    def done(self) -> bytes:
        return b""

    def error(self, error: FareboxError) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        failure = {"code": error.error_code or error.type, "message": error.message}
        response = {**self._response, "status": "failed", "output": self._output,
                    "error": failure}  # fmt: skip
        event = {"type": "response.failed", "sequence_number": self._seq + 1,
                 "response": response}  # fmt: skip
        return self._frame(event)


def client_echo(echo: JSON | None) -> JSON:
    """What a native answer shows of the request as the client sent it (``CLIENT_ECHO``)."""
    return {key: echo[key] for key in CLIENT_ECHO if key in echo} if echo else {}


def costed_usage(usage: Any, entry: LedgerEntry) -> JSON:
    """A native answer's Responses usage (or, if it gave none, the entry's) with the cost."""
    out = dict(usage) if isinstance(usage, dict) else responses_usage(usage_of(entry))
    out["farebox_cost_usd"] = format_usd(entry.cost)
    return out


def _frames(events: list[Event]) -> bytes:
    return b"".join(encode(name, data) for name, data in events)


def message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def render_body(
    flavor: str,
    body: JSON,
    request_id: str,
    entry: LedgerEntry | None = None,
    echo: JSON | None = None,
) -> bytes:
    if flavor == "anthropic":
        message = openai_response_to_anthropic(body)
        message["id"] = message_id(request_id)
        return orjson.dumps(message)
    if flavor == "completions":
        return completion_body(body, request_id)
    if flavor == "responses":
        created = body.get("created")
        created = created if isinstance(created, int) else int(time.time())
        response = response_object(response_id(request_id), created, "", echo)
        usage = usage_of(entry) if entry else from_openai(body.get("usage"))
        cost = format_usd(entry.cost) if entry else None
        return orjson.dumps(chat_to_response(body, response, usage, cost))
    return orjson.dumps(body)


def render_native(body: JSON, request_id: str, entry: LedgerEntry, echo: JSON | None) -> bytes:
    """A native deployment's Responses object, with Farebox's id and cost in its usage."""
    usage = costed_usage(body.get("usage"), entry)
    return orjson.dumps(
        {**body, "id": response_id(request_id), **client_echo(echo), "usage": usage}
    )


def stream_renderer(
    flavor: str, body: Mapping[str, Any], model: str, request_id: str, echo: JSON | None = None
) -> Any:
    if flavor == "anthropic":
        return AnthropicStream(model, request_id)
    if flavor == "completions":
        return CompletionsStream(body, request_id)
    if flavor == "responses":
        return ResponsesStream(model, request_id, echo)
    return OpenAIStream(body)
