"""Shared pieces of the data-plane request models: strict, open to unknown fields, and the
limits every client-chosen size is held to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints

# Strict: no coercion ("10" is not 10, true is not 1). Unknown fields pass through untouched,
# so newer OpenAI or Anthropic parameters still reach the provider.
STRICT_OPEN = ConfigDict(strict=True, extra="allow")
STRICT_CLOSED = ConfigDict(strict=True, extra="forbid")

# Caps on sizes a client chooses (OpenAI's documented limits where it has them).
MAX_N = 128
MAX_TOOLS = 128
MAX_STOP = 4
MAX_ANTHROPIC_STOP = 16
MAX_TOP_LOGPROBS = 20
MAX_EMBEDDING_INPUTS = 2048
MAX_METADATA_KEYS = 16
# OpenAI's function-name rule, plus "." because plan tool policies name tools by dotted
# namespaces ("database.delete*", "payments.*"): such a name is checked by the policy, and an
# upstream that refuses it answers 400 itself.
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_.-]{1,64}$"
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class Open(BaseModel):
    """A request object: typed fields checked strictly, unknown fields allowed."""

    model_config = STRICT_OPEN


ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"\S")]
ToolName = Annotated[str, StringConstraints(pattern=TOOL_NAME_PATTERN)]
SchemaName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
PositiveInt = Annotated[int, Field(ge=1)]
JSONObject = dict[str, Any]


def kind_of(field: str, *, scalar: str | None = None, obj: str | None = None) -> Discriminator:
    """A discriminator that picks a union member by ``value[field]`` (or by ``obj`` for any
    object), or by ``scalar`` when the value is a string, for ``"auto"`` | ``{...}`` fields.

    Named after ``field`` so that errors can say which field was wrong. Tags made up here
    (not a value of the body) start with ``<``, so error paths can leave them out."""

    def pick(value: Any) -> str | None:
        if isinstance(value, dict):
            kind = obj if obj is not None else value.get(field)
            return kind if isinstance(kind, str) else None
        if isinstance(value, str) and scalar is not None:
            return scalar
        return None

    named: Callable[[Any], str | None] = pick
    named.__name__ = field
    return Discriminator(named)
