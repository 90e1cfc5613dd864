"""Pure stream translation: chat-completions chunks -> Responses API stream events. No I/O.

:class:`ChatStreamToResponses` turns ``chat.completion.chunk`` dicts into the Responses event
sequence (``response.created``, ``response.in_progress``, then per output item
``response.output_item.added`` ... ``response.output_item.done``, and ``response.completed``
or ``response.incomplete`` with usage). Every event carries its ``sequence_number``. Frame
them with ``translate_stream_reverse.encode`` (``event: TYPE`` / ``data: {json}``).

Reasoning the upstream streams (``delta.reasoning_content``, or ``delta.reasoning``: vLLM,
DeepSeek, an Anthropic deployment's thinking) is a ``reasoning`` item with one ``summary_text``
part, streamed with the ``response.reasoning_summary_*`` events, as OpenAI streams a summary.
"""

from __future__ import annotations

import copy

from farebox.core.usage import Usage
from farebox.providers.translate_responses import (
    JSON,
    finished,
    function_call_item,
    message_item,
    responses_usage,
)

Event = tuple[str, JSON]


class ChatStreamToResponses:
    """One Responses stream. Call :meth:`feed` for every chunk in order, then :meth:`finish`
    (or :meth:`fail`). Only choice 0 is translated; each tool-call index is its own
    ``function_call`` item; a new item closes the open one."""

    def __init__(self, response: JSON) -> None:
        self.response = response  # the Responses object, ``status: in_progress``
        self._base = str(response["id"]).removeprefix("resp_")
        self._seq = 0
        self._started = False
        self.ended = False
        self._output: list[JSON] = []  # items done
        self._open: JSON | None = None  # the item being streamed
        self._text: list[str] = []
        self._thinking: list[str] = []  # the open reasoning item's summary text
        self._tools: dict[int, JSON] = {}  # chat tool-call index -> its item
        self.finish_reason: str | None = None

    # events ----------------------------------------------------------------------------
    def _event(self, kind: str, **fields: object) -> Event:
        data: JSON = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return kind, data

    def _snapshot(self, kind: str) -> Event:
        return self._event(kind, response=copy.deepcopy(self.response))

    def start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        return [self._snapshot("response.created"), self._snapshot("response.in_progress")]

    # chunks ----------------------------------------------------------------------------
    def feed(self, chunk: JSON) -> list[Event]:
        events = self.start()
        if chunk.get("model"):
            self.response["model"] = chunk["model"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                events += self._reasoning_delta(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                events += self._text_delta(content)
            for call in delta.get("tool_calls") or ():
                events += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text_delta(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self._open["type"] != "message":
            events += self._close()
            item = message_item(f"msg_{self._base}_{len(self._output)}", "", "in_progress")
            part = item["content"].pop()
            events += self._open_item(item)
            events.append(self._event("response.content_part.added", **self._at(), part=part))
        self._text.append(text)
        fields = {**self._at(), "delta": text, "logprobs": []}
        events.append(self._event("response.output_text.delta", **fields))
        return events

    def _reasoning_delta(self, text: str) -> list[Event]:
        """Reasoning (``reasoning_content``) as the one summary part of a ``reasoning`` item."""
        events: list[Event] = []
        if self._open is None or self._open["type"] != "reasoning":
            events += self._close()
            item_id = f"rs_{self._base}_{len(self._output)}"
            events += self._open_item({"id": item_id, "type": "reasoning", "summary": []})
            part = {"type": "summary_text", "text": ""}
            events.append(self._event("response.reasoning_summary_part.added",
                                      **self._summary_at(), part=part))  # fmt: skip
        self._thinking.append(text)
        events.append(self._event("response.reasoning_summary_text.delta",
                                  **self._summary_at(), delta=text))  # fmt: skip
        return events

    def _tool_delta(self, call: JSON) -> list[Event]:
        events: list[Event] = []
        index = call.get("index", 0)
        index = index if isinstance(index, int) else 0
        function = call.get("function") or {}
        item = self._tools.get(index)
        if item is None:
            events += self._close()
            item = function_call_item(
                f"fc_{self._base}_{len(self._output)}",
                str(call.get("id") or f"call_{self._base}_{index}"),
                str(function.get("name") or ""),
                "",
                "in_progress",
            )
            self._tools[index] = item
            events += self._open_item(item)
        elif function.get("name"):
            item["name"] += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and item is self._open:
            item["arguments"] += arguments
            fields = {"item_id": item["id"], "output_index": len(self._output)}
            events.append(self._event("response.function_call_arguments.delta", **fields,
                                      delta=arguments))  # fmt: skip
        return events

    def _open_item(self, item: JSON) -> list[Event]:
        self._open = item
        added = self._event("response.output_item.added", output_index=len(self._output),
                            item=copy.deepcopy(item))  # fmt: skip
        return [added]

    def _at(self) -> JSON:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self._output),
                "content_index": 0}  # fmt: skip

    def _summary_at(self) -> JSON:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self._output),
                "summary_index": 0}  # fmt: skip

    def _close_reasoning(self, item: JSON) -> tuple[JSON, list[Event]]:
        """The ``done`` events of the open reasoning item's summary, and the item done."""
        text = "".join(self._thinking)
        self._thinking = []
        part = {"type": "summary_text", "text": text}
        events = [self._event("response.reasoning_summary_text.done", **self._summary_at(),
                              text=text),
                  self._event("response.reasoning_summary_part.done", **self._summary_at(),
                              part=part)]  # fmt: skip
        return {**item, "summary": [part]}, events

    def _close(self) -> list[Event]:
        """Close the open item: its ``done`` events; it joins the output."""
        item = self._open
        if item is None:
            return []
        events: list[Event] = []
        if item["type"] == "reasoning":
            item, events = self._close_reasoning(item)
        elif item["type"] == "message":
            text = "".join(self._text)
            self._text = []
            done = message_item(item["id"], text)
            part = done["content"][0]
            events.append(self._event("response.output_text.done", **self._at(), text=text,
                                      logprobs=[]))  # fmt: skip
            events.append(self._event("response.content_part.done", **self._at(), part=part))
            item = done
        else:
            item["status"] = "completed"
            fields = {"item_id": item["id"], "output_index": len(self._output)}
            events.append(self._event("response.function_call_arguments.done", **fields,
                                      arguments=item["arguments"], name=item["name"]))  # fmt: skip
        events.append(self._event("response.output_item.done", output_index=len(self._output),
                                  item=copy.deepcopy(item)))  # fmt: skip
        self._output.append(item)
        self._open = None
        return events

    # the end ----------------------------------------------------------------------------
    def finish(self, usage: Usage | None, cost: str | None = None) -> list[Event]:
        """The closing events and ``response.completed`` (or ``response.incomplete``)."""
        if self.ended:
            return []
        events = self.start() + self._close()
        self.ended = True
        response = self.response
        response["output"] = self._output
        response["usage"] = responses_usage(usage, cost) if usage is not None else None
        finished(response, self.finish_reason)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return [*events, self._event(kind, response=response)]

    def fail(self, message: str, code: str) -> list[Event]:
        """``response.failed``: the upstream or the gateway failed after the first byte."""
        if self.ended:
            return []
        events = self.start()
        self.ended = True
        response = self.response
        response["output"] = self._output
        response["status"] = "failed"
        response["error"] = {"code": code, "message": message}
        return [*events, self._event("response.failed", response=response)]
