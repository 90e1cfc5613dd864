"""``POST /v1/completions``: OpenAI's legacy ``CreateCompletionRequest``, as far as Farebox
serves it by translating to chat completions (one prompt, one choice, text only). Unknown
fields pass through the check (and are not sent upstream)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from farebox.api.schemas.chat import StreamOptions
from farebox.api.schemas.common import MAX_METADATA_KEYS, MAX_STOP, ModelName, Open, PositiveInt


class CompletionRequest(Open):
    """OpenAI ``CreateCompletionRequest``."""

    model: ModelName
    prompt: str | Annotated[list[str], Field(min_length=1)]
    max_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool | None = None
    suffix: str | None = None
    seed: int | None = None
    user: str | None = None
    metadata: Annotated[dict[str, str], Field(max_length=MAX_METADATA_KEYS)] | None = None
