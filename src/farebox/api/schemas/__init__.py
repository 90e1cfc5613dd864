"""Typed models of the data-plane request bodies, checked at the edge before anything is
reserved. A wrong shape is an ``InvalidRequest`` naming the ``param``; the body itself is
passed on unchanged (unknown fields included). It may import pydantic, errors and core, and
nothing else of the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from farebox.api.schemas.chat import ChatCompletionRequest
from farebox.api.schemas.embeddings import EmbeddingRequest
from farebox.api.schemas.errors import invalid_request
from farebox.api.schemas.messages import MessagesRequest
from farebox.api.schemas.responses import ResponsesRequest, check_refused
from farebox.errors import InvalidRequest

__all__ = [
    "ChatCompletionRequest",
    "EmbeddingRequest",
    "MessagesRequest",
    "ResponsesRequest",
    "check_chat",
    "check_embeddings",
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
