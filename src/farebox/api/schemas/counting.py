"""The token-counting request bodies: Anthropic's ``POST /v1/messages/count_tokens`` (a
Messages request without ``max_tokens``) and OpenAI's ``POST /v1/responses/input_tokens``
(a Responses request's input: a string or a list of items). Unknown fields pass through."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from farebox.api.schemas.common import MAX_TOOLS, JSONObject, ModelName, Open, PositiveInt
from farebox.api.schemas.messages import MessagesRequest


class CountTokensRequest(MessagesRequest):
    """Anthropic ``MessageCountTokensParams``: a Messages request, ``max_tokens`` optional."""

    max_tokens: PositiveInt | None = None  # type: ignore[assignment]


# --- Responses input items ---------------------------------------------------------------


class InputText(Open):
    type: Literal["input_text", "output_text"]
    text: str


class InputImage(Open):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class InputFile(Open):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class RefusalPart(Open):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | InputImage | InputFile | RefusalPart, Field(discriminator="type")]


class MessageItem(Open):
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class FunctionCallItem(Open):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(Open):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[Part]


class SummaryText(Open):
    type: Literal["summary_text"]
    text: str


class ReasoningItem(Open):
    type: Literal["reasoning"]
    summary: list[SummaryText]


def _item_kind(value: Any) -> str | None:
    """An item's ``type``; a typeless item with a ``role`` is a message."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type", "message")
    return kind if isinstance(kind, str) else None


_item_kind.__name__ = "type"
Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind),
]


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
