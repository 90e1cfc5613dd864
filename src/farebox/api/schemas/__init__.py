"""Typed models of the data-plane request bodies, checked at the edge before anything is
reserved. A wrong shape is an ``InvalidRequest`` naming the ``param``; the body itself is
passed on unchanged (unknown fields included). It may import pydantic, errors and core, and
nothing else of the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from farebox.api.schemas.chat import ChatCompletionRequest
from farebox.api.schemas.completions import CompletionRequest
from farebox.api.schemas.counting import CountTokensRequest, InputTokensRequest
from farebox.api.schemas.embeddings import EmbeddingRequest
from farebox.api.schemas.errors import invalid_request
from farebox.api.schemas.messages import MessagesRequest
from farebox.api.schemas.responses import ResponsesRequest, check_refused
from farebox.errors import InvalidRequest

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "CountTokensRequest",
    "EmbeddingRequest",
    "InputTokensRequest",
    "MessagesRequest",
    "ResponsesRequest",
    "check_chat",
    "check_completion",
    "check_count_tokens",
    "check_embeddings",
    "check_input_tokens",
    "check_messages",
    "check_responses",
]

Check = Callable[[dict[str, Any]], None]


def _checker(model: type[BaseModel]) -> Check:
    validate = model.__pydantic_validator__.validate_python

    def check(body: dict[str, Any]) -> None:
        try:
            validate(body)
        except ValidationError as exc:
            raise invalid_request(exc, body) from None

    return check


_check_chat = _checker(ChatCompletionRequest)
check_embeddings = _checker(EmbeddingRequest)
check_messages = _checker(MessagesRequest)
check_count_tokens = _checker(CountTokensRequest)
_check_input_tokens = _checker(InputTokensRequest)
_check_completion = _checker(CompletionRequest)
_check_responses = _checker(ResponsesRequest)


def check_responses(body: dict[str, Any]) -> None:
    """An OpenAI Responses request: what is refused (named), then the shape."""
    check_refused(body)
    _check_responses(body)


def check_chat(body: dict[str, Any]) -> None:
    """An OpenAI chat request, including the rules between fields."""
    _check_chat(body)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise InvalidRequest(
            "'logprobs' must be true when 'top_logprobs' is set.", param="top_logprobs"
        )


def check_input_tokens(body: dict[str, Any]) -> None:
    """A Responses input to count (after a stored response's, with ``previous_response_id``);
    conversations are not kept by this gateway."""
    _check_input_tokens(body)
    _refuse_set(
        body,
        ("conversation",),
        "'{}' is not supported by /v1/responses/input_tokens on this gateway; send the whole "
        "input, or a previous_response_id.",
    )


def check_completion(body: dict[str, Any]) -> None:
    """A legacy completions request Farebox can serve through chat: one prompt, one choice,
    no echo, suffix or logprobs."""
    _check_completion(body)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) != 1:
        raise InvalidRequest(
            f"Only one prompt per request is supported (got {len(prompt)}); send one request "
            "per prompt.",
            param="prompt",
        )
    for name, allowed in (("n", 1), ("best_of", 1), ("echo", False)):
        if body.get(name) not in (None, allowed):
            raise InvalidRequest(
                f"'{name}' must be {str(allowed).lower()} on this gateway (legacy completions "
                "are served through chat completions).",
                param=name,
            )
    _refuse_set(
        body,
        ("suffix", "logprobs"),
        "'{}' is not supported on this gateway (legacy completions are served through chat "
        "completions).",
    )


def _refuse_set(body: dict[str, Any], names: tuple[str, ...], message: str) -> None:
    """Refuse the first of ``names`` that ``body`` sets (not null): ``message`` with its name."""
    for name in names:
        if body.get(name) is not None:
            raise InvalidRequest(message.format(name), param=name)
