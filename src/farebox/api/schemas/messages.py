"""``POST /v1/messages``: the Anthropic Messages request, as far as the gateway translates it
(text, images, tool use and tool results; thinking blocks in the history are accepted and
dropped). Unknown fields pass through."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from farebox.api.schemas.common import (
    MAX_ANTHROPIC_STOP,
    MAX_TOOLS,
    JSONObject,
    ModelName,
    Open,
    PositiveInt,
    ToolName,
)


class CacheControl(Open):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(Open):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class Base64Source(Open):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(Open):
    type: Literal["url"]
    url: Annotated[str, Field(min_length=1)]


ImageSource = Annotated[Base64Source | URLSource, Field(discriminator="type")]


class ImageBlock(Open):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None


ResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(Open):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ResultPart] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(Open):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JSONObject
    cache_control: CacheControl | None = None


class ThinkingBlock(Open):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(Open):
    type: Literal["redacted_thinking"]
    data: str


UserBlock = Annotated[TextBlock | ImageBlock | ToolResultBlock, Field(discriminator="type")]
AssistantBlock = Annotated[
    TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock, Field(discriminator="type")
]


class UserTurn(Open):
    role: Literal["user"]
    content: str | list[UserBlock]


class AssistantTurn(Open):
    role: Literal["assistant"]
    content: str | list[AssistantBlock]


Turn = Annotated[UserTurn | AssistantTurn, Field(discriminator="role")]


class ClientTool(Open):
    name: ToolName
    description: str | None = None
    input_schema: JSONObject | None = None
    type: str | None = None
    cache_control: CacheControl | None = None


class ChoiceAuto(Open):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ChoiceAny(Open):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ChoiceNone(Open):
    type: Literal["none"]


class ChoiceTool(Open):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


ToolChoice = Annotated[
    ChoiceAuto | ChoiceAny | ChoiceNone | ChoiceTool, Field(discriminator="type")
]


class Metadata(Open):
    user_id: Annotated[str, Field(max_length=256)] | None = None


class MessagesRequest(Open):
    """Anthropic ``MessageCreateParams``."""

    model: ModelName
    max_tokens: PositiveInt
    messages: Annotated[list[Turn], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=MAX_ANTHROPIC_STOP)] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    tools: Annotated[list[ClientTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
