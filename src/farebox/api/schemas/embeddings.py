"""``POST /v1/embeddings``: OpenAI's ``CreateEmbeddingRequest`` (which allows no other
fields)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from farebox.api.schemas.common import (
    MAX_EMBEDDING_INPUTS,
    STRICT_CLOSED,
    ModelName,
    PositiveInt,
)

Items = Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)
EmbeddingInput = (
    Annotated[str, Field(min_length=1)]
    | Annotated[list[str], Items]
    | Annotated[list[int], Items]
    | Annotated[list[Annotated[list[int], Field(min_length=1)]], Items]
)


class EmbeddingRequest(BaseModel):
    """OpenAI ``CreateEmbeddingRequest``."""

    model_config = STRICT_CLOSED

    model: ModelName
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None
    user: str | None = None
