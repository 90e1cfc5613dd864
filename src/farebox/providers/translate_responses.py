"""Pure translation between the OpenAI Responses API and chat completions. No I/O.

A client on ``/v1/responses`` is served by any deployment: :func:`responses_request_to_chat`
turns its (validated) request into the chat-completions body the request path works in, and
:func:`chat_to_response` turns the chat answer into a Responses object. The stream direction
is in ``translate_responses_stream``.
"""

from __future__ import annotations

from typing import Any

from farebox.core.usage import Usage
from farebox.errors import InvalidRequest

JSON = dict[str, Any]

# chat ``finish_reason`` -> Responses ``incomplete_details.reason`` (else: completed)
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# what a Responses object echoes of its request
ECHOED = ("instructions", "metadata", "temperature", "top_p", "max_output_tokens",
          "parallel_tool_calls", "tool_choice", "tools", "text", "reasoning", "store",
          "truncation", "user", "safety_identifier", "prompt_cache_key",
          "service_tier", "previous_response_id")  # fmt: skip
# what ``include`` may ask that the chat-completions answer has no place for
NOT_INCLUDED = {
    "reasoning.encrypted_content": "chat completions return no encrypted reasoning",
    "message.output_text.logprobs": "log probabilities are not translated to Responses output",
}
_PASSED = ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key",
           "service_tier", "stream")  # fmt: skip


# --- request ------------------------------------------------------------------------------


def responses_request_to_chat(body: JSON) -> JSON:
    """A Responses request body as a chat-completions request body."""
    messages: list[JSON] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    else:
        messages.extend(_messages(items or []))
    if not messages:
        raise InvalidRequest("The input holds no message to answer.", param="input")
    out: JSON = {"model": body.get("model"), "messages": messages}
    for key in _PASSED:
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        out["tools"] = [_chat_tool(t) for t in body["tools"]]
        if body.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _chat_tool_choice(body["tool_choice"])
    out.update(_text_options(body.get("text") or {}))
    out.update(_reasoning_options(body.get("reasoning") or {}))
    if body.get("stream"):
        out["stream_options"] = {"include_usage": True}
    return out


def _messages(items: list[JSON]) -> list[JSON]:
    out: list[JSON] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item))
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}  # fmt: skip
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and _open_for_calls(last):
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else _joined(output)
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        # reasoning items stay behind: chat completions has no place for them
    return out


def _open_for_calls(message: JSON) -> bool:
    """An assistant message the next function call joins (text then calls is one turn)."""
    return "tool_calls" in message or isinstance(message.get("content"), str | None)


def _message(item: JSON) -> JSON:
    role, content = item["role"], item["content"]
    if isinstance(content, str):
        return {"role": role, "content": content}
    if role != "user":
        return {"role": role, "content": _joined(content)}
    return {"role": role, "content": [_chat_part(part) for part in content]}


def _joined(parts: list[JSON]) -> str:
    texts = []
    for part in parts:
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise InvalidRequest(
                f"A {part.get('type')} part cannot be sent here; only text can.", param="input"
            )
        texts.append(text)
    return "".join(texts)


def _chat_part(part: JSON) -> JSON:
    kind = part["type"]
    if kind == "input_image":
        image: JSON = {"url": part["image_url"]}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: JSON = {"file_data": part["file_data"]}
        if part.get("filename") is not None:
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    return {"type": "text", "text": part.get("text", part.get("refusal", ""))}


def _chat_tool(tool: JSON) -> JSON:
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                if tool.get(k) is not None}  # fmt: skip
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: str | JSON) -> str | JSON:
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice["name"]}}


def _text_options(text: JSON) -> JSON:
    out: JSON = {}
    fmt = text.get("format")
    if fmt and fmt["type"] == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif fmt and fmt["type"] == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "description", "strict")
                if fmt.get(k) is not None}  # fmt: skip
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    return out


def _reasoning_options(reasoning: JSON) -> JSON:
    """``reasoning.effort`` as ``reasoning_effort``. A summary comes back as the upstream gives
    reasoning (``reasoning_content``): ``summary: auto`` is that; a ``concise`` or ``detailed``
    one only a native deployment can give (``native_only``)."""
    effort = reasoning.get("effort")
    return {"reasoning_effort": effort} if effort is not None else {}


def native_only(body: JSON) -> InvalidRequest | None:
    """The 400 for the first thing a Responses request asks that only a deployment served
    natively (``responses: native``) can give, and no translation to chat completions can:
    ``None`` when a translated deployment can serve it. The gateway keeps only native
    deployments for such a request, and answers this error when the model has none."""
    summary = (body.get("reasoning") or {}).get("summary")
    if summary in ("concise", "detailed"):
        return _unhonoured(
            f"reasoning.summary {summary!r}",
            "chat completions return reasoning as the model gives it. Use 'auto' or leave it out",
            "reasoning.summary",
        )
    for i, name in enumerate(body.get("include") or ()):
        if name in NOT_INCLUDED:
            return _unhonoured(f"include {name!r}", NOT_INCLUDED[name], f"include[{i}]")
    return None


def _unhonoured(what: str, why: str, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"{what} cannot be honoured by the deployments of this model: they serve chat "
        f"completions, and {why}. Only a deployment with responses: native can.",
        param=param,
        code="unsupported_parameter",
    )


# --- response -----------------------------------------------------------------------------


def echo_of(body: JSON) -> JSON:
    """What the Responses object repeats of its request (the defaults OpenAI shows)."""
    out: JSON = {"instructions": None, "metadata": {}, "temperature": 1.0, "top_p": 1.0,
                 "max_output_tokens": None, "parallel_tool_calls": True, "tool_choice": "auto",
                 "tools": [], "text": {"format": {"type": "text"}}, "reasoning": None,
                 "store": True, "truncation": "disabled", "previous_response_id": None,
                 "background": False}  # fmt: skip
    for key in ECHOED:
        if body.get(key) is not None:
            out[key] = body[key]
    return out


def response_object(response_id: str, created_at: int, model: str, echo: JSON | None) -> JSON:
    """A Responses object without output yet (``status: in_progress``)."""
    return {"id": response_id, "object": "response", "created_at": created_at,
            "status": "in_progress", "error": None, "incomplete_details": None,
            "model": model, "output": [], "usage": None, **(echo or {})}  # fmt: skip


def finished(response: JSON, finish_reason: str | None) -> JSON:
    """Mark ``response`` completed, or incomplete when the answer was cut short."""
    reason = INCOMPLETE.get(str(finish_reason))
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    return response


def responses_usage(usage: Usage, cost: str | None = None) -> JSON:
    out: JSON = {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }
    if cost is not None:
        out["farebox_cost_usd"] = cost
    return out


def message_item(item_id: str, text: str, status: str = "completed") -> JSON:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [part]}  # fmt: skip


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str = "completed") -> JSON:  # fmt: skip
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}  # fmt: skip


def chat_to_response(chat: JSON, response: JSON, usage: Usage, cost: str | None) -> JSON:
    """The chat-completions answer ``chat`` as the output and usage of ``response``."""
    base = response["id"].removeprefix("resp_")
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[JSON] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        summary = [{"type": "summary_text", "text": reasoning}]
        output.append({"id": f"rs_{base}", "type": "reasoning", "summary": summary})
    content = message.get("content")
    if isinstance(content, str) and content:
        output.append(message_item(f"msg_{base}", content))
    elif message.get("refusal"):
        item = message_item(f"msg_{base}", "")
        item["content"] = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(item)
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        output.append(function_call_item(f"fc_{base}_{i}", str(call.get("id") or f"call_{i}"),
                                         str(function.get("name", "")),
                                         str(function.get("arguments") or "{}")))  # fmt: skip
    response["output"] = output
    response["model"] = chat.get("model") or response["model"]
    response["usage"] = responses_usage(usage, cost)
    return finished(response, choice.get("finish_reason"))
