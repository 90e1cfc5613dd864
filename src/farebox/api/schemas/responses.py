"""``POST /v1/responses``: OpenAI's ``CreateResponse``, as far as the gateway translates it to
chat completions (messages with text, image and file parts, function calls and their outputs,
function tools), continuing a stored response (``previous_response_id``). Fields that need
what Farebox does not have yet (conversations, background runs, built-in tools) are refused
by ``check_responses`` with a 400 naming the field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from farebox.api.schemas.chat import FormatJSONObject, FormatText, FunctionObject
from farebox.api.schemas.common import (
    MAX_METADATA_KEYS,
    MAX_TOOLS,
    JSONObject,
    ModelName,
    Open,
    PositiveInt,
    SchemaName,
    ToolName,
)
from farebox.errors import InvalidRequest

# --- content parts ------------------------------------------------------------------------


class InputText(Open):
    type: Literal["input_text"]
    text: str


class InputImage(Open):
    type: Literal["input_image"]
    image_url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class InputFile(Open):
    type: Literal["input_file"]
    file_data: str
    filename: str | None = None


class OutputText(Open):
    type: Literal["output_text"]
    text: str
    annotations: list[JSONObject] | None = None


class Refusal(Open):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[
    InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")
]

# --- input items --------------------------------------------------------------------------


class MessageItem(Open):
    type: Literal["message"] | None = None
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[Part]


class FunctionCallItem(Open):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: ToolName
    arguments: str


class FunctionCallOutputItem(Open):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1)]
    output: str | list[Part]


class ReasoningItem(Open):
    """A reasoning item sent back with the history: accepted, and not sent upstream."""

    type: Literal["reasoning"]


def _item_kind(value: Any) -> str | None:
    """An item's ``type``; a message may leave it out (``EasyInputMessage``)."""
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

# --- tools, tool choice, text format ------------------------------------------------------


class FunctionType(Open):
    type: Literal["function"]


# chat's function object, flat beside its ``type``; the bases in this order keep ``type`` the
# first field, so a tool missing both is refused naming ``type`` (a docstring would show in
# /openapi.json)
class FunctionTool(FunctionObject, FunctionType):
    pass


class NamedFunction(Open):
    type: Literal["function"]
    name: ToolName


ToolChoice = Literal["none", "auto", "required"] | NamedFunction


class FormatJSONSchema(Open):
    type: Literal["json_schema"]
    name: SchemaName
    schema_: JSONObject = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    FormatText | FormatJSONObject | FormatJSONSchema, Field(discriminator="type")
]


class TextOptions(Open):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningOptions(Open):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


# --- the request ----------------------------------------------------------------------------


class ResponsesRequest(Open):
    """OpenAI ``CreateResponse`` (the parts the gateway serves)."""

    model: ModelName
    input: str | Annotated[list[Item], Field(min_length=1)]
    instructions: str | None = None
    stream: bool | None = None
    store: bool | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextOptions | None = None
    reasoning: ReasoningOptions | None = None
    metadata: Annotated[dict[str, str], Field(max_length=MAX_METADATA_KEYS)] | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    previous_response_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


# --- what is refused before the shape is checked ----------------------------------------------

_NOT_YET = {
    "conversation": "Conversations are not supported yet: send the whole conversation in 'input'",
    "prompt": "Prompt templates are not supported",
    "max_tool_calls": "'max_tool_calls' is not supported",
    "top_logprobs": "'top_logprobs' is not supported on /v1/responses",
}
_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


def check_refused(body: dict[str, Any]) -> None:
    """A 400 naming the field for what the gateway cannot serve (yet), rather than dropping it."""
    for name, why in _NOT_YET.items():
        if body.get(name) is not None:
            raise InvalidRequest(f"{why}.", param=name, code="unsupported_parameter")
    if body.get("background"):
        raise InvalidRequest(
            "Background responses are not supported yet; leave 'background' unset or false.",
            param="background",
            code="unsupported_parameter",
        )
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind != "function":
            raise InvalidRequest(
                f"The built-in tool {kind!r} is not supported by this gateway; only function "
                "tools are.",
                param=f"tools[{i}].type",
                code="unsupported_parameter",
            )
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        kind = _item_kind(item)
        if kind is not None and kind not in _ITEM_TYPES:
            raise InvalidRequest(
                f"Input items of type {kind!r} are not supported; supported types: "
                f"{', '.join(_ITEM_TYPES)}.",
                param=f"input[{i}].type",
                code="unsupported_parameter",
            )
