"""Pure translation between OpenAI chat-completions and Anthropic Messages. No I/O.

Forward direction (the pipeline speaks OpenAI, the deployment speaks Anthropic):
:func:`openai_request_to_anthropic`, :func:`anthropic_response_to_openai` and
:class:`AnthropicStreamTranslator`. The reverse direction is in ``translate_reverse``.
A request field with no faithful place in Messages is refused (``capabilities``), never
dropped; ``thinking`` blocks come back as ``reasoning_content``, as OpenAI-compatible servers
give reasoning.
"""

from __future__ import annotations

from typing import Any

import orjson

from farebox.core.usage import from_anthropic, to_openai
from farebox.errors import InvalidRequest
from farebox.providers.capabilities import refuse

JSON = dict[str, Any]
DEFAULT_MAX_TOKENS = 4096

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# between two thinking blocks' texts in ``reasoning_content`` (one text, as chat has one field)
THOUGHTS_APART = "\n\n"
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# --- OpenAI request -> Anthropic request ------------------------------------------------


def openai_request_to_anthropic(body: JSON) -> JSON:
    """An OpenAI chat-completions request body as an Anthropic Messages request body; a 400
    for a field it has no faithful place for (``capabilities.ANTHROPIC``)."""
    refuse("anthropic", body)
    system, messages = _split_system(body.get("messages") or [])
    out: JSON = {"model": body.get("model"), "messages": _merge_roles(messages)}
    out["max_tokens"] = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = out["max_tokens"] or DEFAULT_MAX_TOKENS
    if system:
        out["system"] = system
    out.update(_sampling(body))
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(tool) for tool in tools]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and tools:
        out["tool_choice"] = choice
    if body.get("stream"):
        out["stream"] = True
    return out


def _sampling(body: JSON) -> JSON:
    out: JSON = {}
    if body.get("temperature") is not None:
        out["temperature"] = body["temperature"]  # 0..1 here: above is refused
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    user = body.get("user") or body.get("safety_identifier")  # both name the end user
    if user:
        out["metadata"] = {"user_id": str(user)}
    if body.get("reasoning_effort") == "none":  # any other effort is refused
        out["thinking"] = {"type": "disabled"}
    return out


def _split_system(messages: list[JSON]) -> tuple[str | list[JSON], list[JSON]]:
    system: list[JSON] = []
    rest: list[JSON] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            system.extend(_text_blocks(message.get("content")))
        else:
            rest.append(_message(message))
    if any("cache_control" in block for block in system):
        return system, rest
    return "\n\n".join(block["text"] for block in system), rest


def _message(message: JSON) -> JSON:
    role = message.get("role")
    if role == "tool":
        return {"role": "user", "content": [_tool_result(message)]}
    if role == "assistant":
        return {"role": "assistant", "content": _assistant_blocks(message)}
    if role == "user":
        return {"role": "user", "content": _user_content(message.get("content"))}
    raise InvalidRequest(f"unsupported message role {role!r}", param="messages")


def _user_content(content: object) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return [_part(part) for part in parts if _part_kept(part)]


def _part_kept(part: JSON) -> bool:
    return part.get("type") != "text" or bool(part.get("text"))


def _part(part: JSON) -> JSON:
    kind = part.get("type")
    if kind == "text":
        return _with_cache(part, {"type": "text", "text": part["text"]})
    if kind == "image_url":
        image = part["image_url"]
        url = image["url"] if isinstance(image, dict) else str(image)
        return _with_cache(part, {"type": "image", "source": _media_source(url)})
    data = (part.get("file") or {}).get("file_data") if kind == "file" else None
    if isinstance(data, str) and data.startswith("data:"):
        source = _media_source(data)
        return _with_cache(part, {"type": "document", "source": source})
    raise InvalidRequest(f"content part {kind!r} is not supported by this model's provider")


def _media_source(url: str) -> JSON:
    if not url.startswith("data:"):
        return {"type": "url", "url": url}
    header, _, data = url[5:].partition(",")
    media_type = header.split(";")[0] or "application/octet-stream"
    return {"type": "base64", "media_type": media_type, "data": data}


def _with_cache(part: JSON, block: JSON) -> JSON:
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _text_blocks(content: object) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    parts = content if isinstance(content, list) else []
    return [_part(p) for p in parts if p.get("type") == "text" and p.get("text")]


def _assistant_blocks(message: JSON) -> list[JSON]:
    blocks = _text_blocks(message.get("content"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments_object(function.get("arguments")),
            }
        )
    return blocks


def arguments_object(arguments: object) -> JSON:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param="messages")
    return parsed


def _tool_result(message: JSON) -> JSON:
    content = message.get("content")
    result: JSON = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    result["content"] = content if isinstance(content, str) else _text_blocks(content)
    return result


def _merge_roles(messages: list[JSON]) -> list[JSON]:
    """Merge consecutive messages of one role (tool results then follow their tool_use)."""
    merged: list[JSON] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            previous = merged[-1]
            previous["content"] = _blocks(previous["content"]) + _blocks(message["content"])
        else:
            merged.append(message)
    return merged


def _blocks(content: str | list[JSON]) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _tool(tool: JSON) -> JSON:
    function = tool.get("function") or {}
    if tool.get("type") != "function" or not function.get("name"):
        raise InvalidRequest("only function tools are supported", param="tools")
    out: JSON = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: object, parallel: object) -> JSON | None:
    if choice is None and parallel is not False:
        return None
    if choice is None or choice == "auto":
        out: JSON = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


# --- Anthropic response -> OpenAI response ----------------------------------------------


def anthropic_response_to_openai(message: JSON, *, created: int) -> JSON:
    """An Anthropic ``message`` as an OpenAI ``chat.completion`` (``created``: unix seconds)."""
    blocks = message.get("content") or []
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    reply: JSON = {"role": "assistant", "content": text if text or not calls else None}
    reply["refusal"] = None
    thoughts = [b.get("thinking") for b in blocks if b.get("type") == "thinking"]
    if any(thoughts):  # as OpenAI-compatible servers (vLLM, DeepSeek) give reasoning
        reply["reasoning_content"] = THOUGHTS_APART.join(t for t in thoughts if t)
    if calls:
        reply["tool_calls"] = calls
    choice = {"index": 0, "message": reply, "logprobs": None}
    choice["finish_reason"] = FINISH_REASONS.get(str(message.get("stop_reason")), "stop")
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [choice],
        "usage": to_openai(from_anthropic(message.get("usage"))),
    }


def tool_call(block: JSON) -> JSON:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    function = {"name": block.get("name"), "arguments": arguments}
    return {"id": block.get("id"), "type": "function", "function": function}


# --- Anthropic stream -> OpenAI chunks --------------------------------------------------


class AnthropicStreamTranslator:
    """Turns Anthropic stream events into OpenAI ``chat.completion.chunk`` dicts.

    Feed every event's data in order. ``usage`` holds the merged cumulative usage (the
    last value of each field wins). ``error`` events are for the caller to raise.
    """

    def __init__(self, *, created: int, model: str | None = None) -> None:
        self.created = created
        self.model = model
        self.id = ""
        self.usage: JSON = {}
        self.stop_reason: str | None = None
        self.finished = False
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_call index
        self._thought = False  # a thinking block was started: the next one is set apart

    def feed(self, data: JSON) -> list[JSON]:
        handler = _HANDLERS.get(str(data.get("type")))
        return handler(self, data) if handler is not None else []

    def usage_chunk(self) -> JSON:
        """The final OpenAI usage chunk (``choices`` empty)."""
        chunk = self._base([])
        chunk["usage"] = to_openai(from_anthropic(self.usage))
        return chunk

    def _base(self, choices: list[JSON]) -> JSON:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._base([choice])

    def _on_message_start(self, data: JSON) -> list[JSON]:
        message = data.get("message") or {}
        self.id = str(message.get("id") or "")
        self.model = message.get("model") or self.model
        self.usage.update(message.get("usage") or {})
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_block_start(self, data: JSON) -> list[JSON]:
        block = data.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "thinking":
            apart, self._thought = THOUGHTS_APART if self._thought else "", True
            text = apart + str(block.get("thinking") or "")
            return [self._chunk({"reasoning_content": text})] if text else []
        if block.get("type") != "tool_use":
            return []
        index = self._tools.setdefault(int(data.get("index", 0)), len(self._tools))
        function = {"name": block.get("name"), "arguments": ""}
        call = {"index": index, "id": block.get("id"), "type": "function", "function": function}
        return [self._chunk({"tool_calls": [call]})]

    def _on_block_delta(self, data: JSON) -> list[JSON]:
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if delta.get("type") == "thinking_delta" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        tool = self._tools.get(int(data.get("index", -1)))
        if delta.get("type") != "input_json_delta" or tool is None:
            return []
        call = {"index": tool, "function": {"arguments": delta.get("partial_json", "")}}
        return [self._chunk({"tool_calls": [call]})]

    def _on_message_delta(self, data: JSON) -> list[JSON]:
        self.stop_reason = (data.get("delta") or {}).get("stop_reason") or self.stop_reason
        self.usage.update(data.get("usage") or {})  # cumulative: last value wins
        return []

    def _on_message_stop(self, data: JSON) -> list[JSON]:
        self.finished = True
        finish = FINISH_REASONS.get(str(self.stop_reason), "stop")
        return [self._chunk({}, finish)]


_HANDLERS = {
    "message_start": AnthropicStreamTranslator._on_message_start,
    "content_block_start": AnthropicStreamTranslator._on_block_start,
    "content_block_delta": AnthropicStreamTranslator._on_block_delta,
    "message_delta": AnthropicStreamTranslator._on_message_delta,
    "message_stop": AnthropicStreamTranslator._on_message_stop,
}
