"""``POST /v1/chat/completions``: OpenAI's ``CreateChatCompletionRequest``, as far as the
gateway, its translators and its providers read it. Unknown fields pass through."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Tag

from farebox.api.schemas.common import (
    MAX_METADATA_KEYS,
    MAX_N,
    MAX_STOP,
    MAX_TOOLS,
    MAX_TOP_LOGPROBS,
    JSONObject,
    ModelName,
    Open,
    PositiveInt,
    SchemaName,
    ToolName,
    kind_of,
)

# --- content parts ------------------------------------------------------------------------


class TextPart(Open):
    type: Literal["text"]
    text: str


class ImageURL(Open):
    url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Open):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(Open):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(Open):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(Open):
    filename: str | None = None
    file_data: str | None = None
    file_id: str | None = None


class FilePart(Open):
    type: Literal["file"]
    file: FileRef


class RefusalPart(Open):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]
TextParts = Annotated[list[TextPart], Field(min_length=1)]

# --- messages -----------------------------------------------------------------------------


class FunctionCall(Open):
    name: str
    arguments: str


class ToolCall(Open):
    id: str
    type: Literal["function"]
    function: FunctionCall


class CustomCall(Open):
    name: str
    input: str


class CustomToolCall(Open):
    id: str
    type: Literal["custom"]
    custom: CustomCall


AnyToolCall = Annotated[ToolCall | CustomToolCall, Field(discriminator="type")]


class AudioRef(Open):
    id: str


class SystemMessage(Open):
    role: Literal["system"]
    content: str | TextParts
    name: str | None = None


class DeveloperMessage(Open):
    role: Literal["developer"]
    content: str | TextParts
    name: str | None = None


class UserMessage(Open):
    role: Literal["user"]
    content: str | Annotated[list[UserPart], Field(min_length=1)]
    name: str | None = None


class AssistantMessage(Open):
    role: Literal["assistant"]
    content: str | Annotated[list[AssistantPart], Field(min_length=1)] | None = None
    refusal: str | None = None
    name: str | None = None
    audio: AudioRef | None = None
    tool_calls: list[AnyToolCall] | None = None
    function_call: FunctionCall | None = None


class ToolMessage(Open):
    role: Literal["tool"]
    content: str | TextParts
    tool_call_id: str


class FunctionMessage(Open):
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage
    | DeveloperMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage,
    Field(discriminator="role"),
]

# --- tools ----------------------------------------------------------------------------------


class FunctionObject(Open):
    name: ToolName
    description: str | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class FunctionTool(Open):
    type: Literal["function"]
    function: FunctionObject


class CustomToolSpec(Open):
    name: ToolName
    description: str | None = None
    format: JSONObject | None = None


class CustomTool(Open):
    type: Literal["custom"]
    custom: CustomToolSpec


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class NamedFunction(Open):
    name: str


class NamedToolChoice(Open):
    type: Literal["function"]
    function: NamedFunction


class NamedCustomChoice(Open):
    type: Literal["custom"]
    custom: NamedFunction


class AllowedTools(Open):
    mode: Literal["auto", "required"]
    tools: list[JSONObject]


class AllowedToolsChoice(Open):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("<mode>")]
    | Annotated[NamedToolChoice, Tag("function")]
    | Annotated[NamedCustomChoice, Tag("custom")]
    | Annotated[AllowedToolsChoice, Tag("allowed_tools")],
    kind_of("type", scalar="<mode>"),
]


class FunctionDef(Open):
    name: ToolName
    description: str | None = None
    parameters: JSONObject | None = None


FunctionCallChoice = Annotated[
    Annotated[Literal["none", "auto"], Tag("<mode>")] | Annotated[NamedFunction, Tag("<object>")],
    kind_of("name", scalar="<mode>", obj="<object>"),
]

# --- response format ------------------------------------------------------------------------


class JSONSchemaSpec(Open):
    name: SchemaName
    description: str | None = None
    schema_: JSONObject | None = Field(default=None, alias="schema")
    strict: bool | None = None


class FormatText(Open):
    type: Literal["text"]


class FormatJSONObject(Open):
    type: Literal["json_object"]


class FormatJSONSchema(Open):
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[
    FormatText | FormatJSONObject | FormatJSONSchema, Field(discriminator="type")
]


class StreamOptions(Open):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# --- the request ----------------------------------------------------------------------------


class ChatCompletionRequest(Open):
    """OpenAI ``CreateChatCompletionRequest``."""

    model: ModelName
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    metadata: Annotated[dict[str, str], Field(max_length=MAX_METADATA_KEYS)] | None = None
    store: bool | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[FunctionDef], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    function_call: FunctionCallChoice | None = None
    response_format: ResponseFormat | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prediction: JSONObject | None = None
    audio: JSONObject | None = None
    web_search_options: JSONObject | None = None
