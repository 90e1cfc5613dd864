"""The token-counting request bodies: Anthropic's ``POST /v1/messages/count_tokens`` (a
Messages request without ``max_tokens``) and OpenAI's ``POST /v1/responses/input_tokens``
(a Responses request's input: a string or a list of items, the items of
``schemas.responses``). Unknown fields pass through."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from farebox.api.schemas.common import MAX_TOOLS, JSONObject, ModelName, Open, PositiveInt
from farebox.api.schemas.messages import MessagesRequest
from farebox.api.schemas.responses import Item


class CountTokensRequest(MessagesRequest):
    """Anthropic ``MessageCountTokensParams``: a Messages request, ``max_tokens`` optional."""

    max_tokens: PositiveInt | None = None  # type: ignore[assignment]


class InputTokensRequest(Open):
    """OpenAI ``InputTokenCountParams``, as far as Farebox counts it."""

    model: ModelName | None = None
    input: str | list[Item] | None = None
    instructions: str | None = None
    tools: Annotated[list[JSONObject], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | JSONObject | None = None
    parallel_tool_calls: bool | None = None
    reasoning: JSONObject | None = None
    text: JSONObject | None = None
    truncation: Literal["auto", "disabled"] | None = None
    previous_response_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
