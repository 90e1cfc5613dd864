"""A fake OpenAI upstream that speaks the Responses API itself (wire-formats.md section 7.4):
``POST /v1/responses``, answered with a Responses object or its typed event stream
(``event: TYPE`` / ``data: {...}`` frames, every event with its ``sequence_number``, usage in
the terminal ``response.completed``).

Usage::

    async with ResponsesUpstream() as upstream:
        upstream.reply_response([reasoning(), message("Hi")], usage=usage(10, 5, reasoning=3))
        upstream.reply_events([message("Hel", "lo")], usage=usage(9, 2))
        upstream.reply_events([message("Hel", "lo")], fail_after=4)   # an ``error`` event
        upstream.reply_error(500, "boom")                             # as OpenAIUpstream
        upstream.last.json

Unscripted ``/v1/responses`` requests get a one-message answer (streamed when asked); chat
completions and embeddings are answered as ``OpenAIUpstream`` does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import orjson

from fakes import Recorded, Reply
from fakes.openai_upstream import CREATED, MODEL, OpenAIUpstream

JSON = dict[str, Any]
UPSTREAM_ID = "resp_upstream_0001"


def usage(
    input: int = 9, output: int = 2, *, cached: int = 0, reasoning: int = 0, written: int = 0
) -> JSON:
    """A Responses ``usage`` object, every field as the SDK requires it."""
    return {
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output,
    }


def usage_of_one() -> JSON:
    """The usage of an unscripted answer."""
    return usage()


def message(*texts: str, item_id: str = "msg_up_1") -> JSON:
    """An assistant message item; streamed, each text is one ``output_text.delta``."""
    part = {"type": "output_text", "text": "".join(texts), "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [part], "_deltas": list(texts)}  # fmt: skip


def reasoning(summary: str = "Thinking it over.", item_id: str = "rs_up_1") -> JSON:
    return {"id": item_id, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": summary}]}  # fmt: skip


def function_call(call_id: str, name: str, arguments: JSON, item_id: str = "fc_up_1") -> JSON:
    args = orjson.dumps(arguments).decode()
    return {"id": item_id, "type": "function_call", "status": "completed", "call_id": call_id,
            "name": name, "arguments": args}  # fmt: skip


def _clean(item: JSON) -> JSON:
    return {k: v for k, v in item.items() if k != "_deltas"}


def response(
    output: Sequence[JSON] = (),
    *,
    usage_: JSON | None = None,
    status: str = "completed",
    model: str = MODEL,
    request: JSON | None = None,
) -> JSON:
    """A Responses object as OpenAI returns it, echoing ``request`` as OpenAI does."""
    asked = request or {}
    return {
        "id": UPSTREAM_ID, "object": "response", "created_at": CREATED, "status": status,
        "error": None, "incomplete_details": None, "instructions": asked.get("instructions"),
        "max_output_tokens": asked.get("max_output_tokens"), "model": model,
        "output": [_clean(item) for item in output], "parallel_tool_calls": True,
        "previous_response_id": asked.get("previous_response_id"), "reasoning": None,
        "store": asked.get("store", True), "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": asked.get("tools", []), "top_p": 1.0, "truncation": "disabled",
        "usage": usage_, "metadata": asked.get("metadata", {}),
    }  # fmt: skip


class _Events:
    """Builds the event sequence of one streamed answer, numbering the events."""

    def __init__(self) -> None:
        self.events: list[JSON] = []

    def add(self, kind: str, **fields: Any) -> None:
        self.events.append({"type": kind, "sequence_number": len(self.events), **fields})

    def item(self, index: int, item: JSON) -> None:
        opened = {**_clean(item), "status": "in_progress"}
        if item["type"] == "message":
            opened["content"] = []
        elif item["type"] == "function_call":
            opened["arguments"] = ""
        elif item["type"] == "reasoning":
            opened = {**_clean(item), "summary": []}
        self.add("response.output_item.added", output_index=index, item=opened)
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            self._text(at, item)
        elif item["type"] == "function_call":
            self.add("response.function_call_arguments.delta", **at, delta=item["arguments"])
            self.add("response.function_call_arguments.done", **at,
                     arguments=item["arguments"], name=item["name"])  # fmt: skip
        self.add("response.output_item.done", output_index=index, item=_clean(item))

    def _text(self, at: JSON, item: JSON) -> None:
        part = item["content"][0]
        at = {**at, "content_index": 0}
        self.add("response.content_part.added", **at, part={**part, "text": ""})
        for delta in item.get("_deltas") or [part["text"]]:
            self.add("response.output_text.delta", **at, delta=delta, logprobs=[])
        self.add("response.output_text.done", **at, text=part["text"], logprobs=[])
        self.add("response.content_part.done", **at, part=part)


def events(
    output: Sequence[JSON], usage_: JSON | None, request: JSON | None = None, cut: bool = False
) -> list[JSON]:
    """Every event of a streamed answer with ``output``, ending ``response.completed`` (or
    ``response.incomplete``, ``cut`` short by ``max_output_tokens``)."""
    built = _Events()
    started = response(status="in_progress", request=request)
    built.add("response.created", response=copy.deepcopy(started))
    built.add("response.in_progress", response=copy.deepcopy(started))
    for index, item in enumerate(output):
        built.item(index, item)
    status = "incomplete" if cut else "completed"
    done = response(output, usage_=usage_, request=request, status=status)
    if cut:
        done["incomplete_details"] = {"reason": "max_output_tokens"}
    built.add(f"response.{status}", response=done)
    return built.events


def frame(event: JSON | str) -> bytes:
    """One SSE frame as OpenAI sends Responses events: ``event:`` line, then ``data:``."""
    if isinstance(event, str):
        return b"data: " + event.encode() + b"\n\n"
    return f"event: {event['type']}\ndata: ".encode() + orjson.dumps(event) + b"\n\n"


class ResponsesUpstream(OpenAIUpstream):
    def reply_response(
        self, output: Sequence[JSON] = (), *, usage: JSON | None = None, status: int = 200
    ) -> None:
        body = response(output or [message("Hello")], usage_=usage or usage_of_one())
        self.push(Reply(status=status, body=body))

    def reply_events(
        self,
        output: Sequence[JSON] = (),
        *,
        usage: JSON | None = None,
        fail_after: int | None = None,
        stop_after: int | None = None,
        disconnect_after: int | None = None,
        hold: bool = False,
        cut: bool = False,
    ) -> None:
        """A streamed answer; ``fail_after`` events in, an ``error`` event ends it instead;
        ``stop_after`` events in, nothing more is sent (with ``hold``, the stream stays open);
        ``cut``: it ends ``response.incomplete``."""
        answer = output or [message("Hel", "lo")]
        sent: list[JSON | str] = list(events(answer, usage or usage_of_one(), cut=cut))
        if fail_after is not None:
            error = {"type": "error", "sequence_number": fail_after, "code": "server_error",
                     "message": "The model crashed mid-answer.", "param": None}  # fmt: skip
            sent = [*sent[:fail_after], error]
        sent = sent[:stop_after]
        self.push(Reply(frames=[frame(e) for e in sent], disconnect_after=disconnect_after,
                        hold=hold))  # fmt: skip

    def default_reply(self, request: Recorded) -> Reply:
        if request.path != "/v1/responses":
            return super().default_reply(request)
        asked = request.json or {}
        output = [message("Hel", "lo")]
        if not asked.get("stream"):
            return Reply(body=response(output, usage_=usage(), request=asked))
        return Reply(frames=[frame(e) for e in events(output, usage(), asked)])
