"""Pure translation, reverse direction: an Anthropic client served by an OpenAI deployment.

:func:`anthropic_request_to_openai` and :func:`openai_response_to_anthropic`. No I/O.
"""

from __future__ import annotations

from farebox.core.usage import from_openai
from farebox.errors import InvalidRequest
from farebox.providers.translate import JSON, STOP_REASONS, arguments_object, tool_call


def anthropic_request_to_openai(body: JSON) -> JSON:
    """An Anthropic Messages request body as an OpenAI chat-completions request body."""
    messages: list[JSON] = []
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else "\n\n".join(b["text"] for b in system)
        messages.append({"role": "system", "content": text})
    for message in body.get("messages") or []:
        messages.extend(_openai_messages(message))
    out: JSON = {"model": body.get("model"), "messages": messages}
    out["max_completion_tokens"] = body.get("max_tokens")
    for key in ("temperature", "top_p", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if (body.get("metadata") or {}).get("user_id"):
        out["user"] = body["metadata"]["user_id"]
    if body.get("tools"):
        out["tools"] = [_openai_tool(tool) for tool in body["tools"]]
        out.update(_openai_tool_choice(body.get("tool_choice")))
    if body.get("stream"):
        out["stream_options"] = {"include_usage": True}
    return out


def _openai_messages(message: JSON) -> list[JSON]:
    content = message.get("content")
    role = message.get("role")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks: list[JSON] = content or []
    if role == "assistant":
        return [_openai_assistant(blocks)]
    results = [_openai_tool_message(b) for b in blocks if b.get("type") == "tool_result"]
    parts = [_openai_part(b) for b in blocks if b.get("type") != "tool_result"]
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _openai_assistant(blocks: list[JSON]) -> JSON:
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    out: JSON = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = calls
    return out


def _openai_tool_message(block: JSON) -> JSON:
    content = block.get("content")
    if not isinstance(content, str):
        content = "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": content}


def _openai_part(block: JSON) -> JSON:
    if block.get("type") == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source") or {}
    if block.get("type") == "image" and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if block.get("type") == "image" and source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    raise InvalidRequest(f"content block {block.get('type')!r} is not supported here")


def _openai_tool(tool: JSON) -> JSON:
    function: JSON = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _openai_tool_choice(choice: JSON | None) -> JSON:
    if not choice:
        return {}
    kinds = {"auto": "auto", "any": "required", "none": "none"}
    out: JSON = {}
    if choice.get("type") == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        out["tool_choice"] = kinds.get(str(choice.get("type")), "auto")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def openai_response_to_anthropic(body: JSON) -> JSON:
    """An OpenAI ``chat.completion`` as an Anthropic ``message``."""
    choice = (body.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[JSON] = []
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
        block["input"] = arguments_object(function.get("arguments"))
        content.append(block)
    usage = from_openai(body.get("usage"))
    return {
        "id": body.get("id"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.uncached_input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_write_5m_tokens,
            "cache_read_input_tokens": usage.cached_input_tokens,
        },
    }
