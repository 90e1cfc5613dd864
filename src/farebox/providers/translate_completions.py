"""Pure translation for legacy text completions (``POST /v1/completions``): the request as a
chat-completions request, and chat answers (whole or streamed) back in the legacy
``text_completion`` shape. No I/O.

The prompt becomes one user message; the answer's text is the assistant message's content.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
# Legacy fields that mean the same in chat completions, copied as they are.
SAME_FIELDS = (
    "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "user",
    "presence_penalty", "frequency_penalty", "seed", "logit_bias", "metadata",
)  # fmt: skip
FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content_filter"}
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for legacy completions


def completion_request_to_chat(body: JSON) -> JSON:
    """A legacy completions request body (already validated: one prompt) as a chat one."""
    prompt = body["prompt"]
    text = prompt if isinstance(prompt, str) else prompt[0]
    chat: JSON = {"model": body["model"], "messages": [{"role": "user", "content": text}]}
    for name in SAME_FIELDS:
        if body.get(name) is not None:
            chat[name] = body[name]
    chat.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    return chat


def completion_id(request_id: str) -> str:
    return "cmpl-" + request_id.removeprefix("req_")


def _choice(choice: JSON, text: str) -> JSON:
    reason = choice.get("finish_reason")
    return {
        "text": text,
        "index": choice.get("index", 0),
        "logprobs": None,
        "finish_reason": FINISH_REASONS.get(reason, "stop") if reason is not None else None,
    }


def _head(body: JSON, request_id: str) -> JSON:
    head: JSON = {"id": completion_id(request_id), "object": "text_completion"}
    head["created"] = body.get("created", 0)
    head["model"] = body.get("model", "")
    if body.get("system_fingerprint") is not None:
        head["system_fingerprint"] = body["system_fingerprint"]
    return head


def chat_response_to_completion(body: JSON, request_id: str) -> JSON:
    """A ``chat.completion`` as a ``text_completion``."""
    out = _head(body, request_id)
    choices = []
    for choice in body.get("choices") or ():
        content = (choice.get("message") or {}).get("content")
        choices.append(_choice(choice, content if isinstance(content, str) else ""))
    out["choices"] = choices
    if body.get("usage") is not None:
        out["usage"] = body["usage"]
    return out


def chat_chunk_to_completion(chunk: JSON, request_id: str) -> JSON | None:
    """A ``chat.completion.chunk`` as a streamed ``text_completion``; None for a chunk that
    carries nothing a legacy client reads (the role-only first chunk)."""
    out = _head(chunk, request_id)
    choices = []
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        text = content if isinstance(content, str) else ""
        if text or choice.get("finish_reason") is not None:
            choices.append(_choice(choice, text))
    if not choices and chunk.get("usage") is None:
        return None
    out["choices"] = choices
    if chunk.get("usage") is not None:
        out["usage"] = chunk["usage"]
    return out
