"""Per-model ceilings on what a client may ask for: output tokens and embedding dimensions.

Sizes a client chooses are checked against these before anything is reserved, so a single
request cannot ask a deployment for unbounded work. Models not listed get the ``DEFAULT_*``
ceilings. A model alias served by several deployments is capped by the strictest of them, so
every deployment it may fail over to can serve what was admitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

DEFAULT_MAX_OUTPUT_TOKENS = 131_072
DEFAULT_EMBEDDING_DIMENSIONS = 4_096

# The largest ``max_tokens`` / ``max_completion_tokens`` each model accepts (its output limit).
MAX_OUTPUT_TOKENS: Mapping[str, int] = MappingProxyType(
    {
        "gpt-4o": 16_384,
        "gpt-4o-mini": 16_384,
        "gpt-4.1": 32_768,
        "gpt-4.1-mini": 32_768,
        "gpt-4.1-nano": 32_768,
        "o3": 100_000,
        "o4-mini": 100_000,
        "gpt-5": 128_000,
        "gpt-5.1": 128_000,
        "gpt-5-mini": 128_000,
        "gpt-5-nano": 128_000,
        "claude-opus-4-0": 32_000,
        "claude-opus-4-1": 32_000,
        "claude-opus-4-5": 64_000,
        "claude-sonnet-4-0": 64_000,
        "claude-sonnet-4-5": 64_000,
        "claude-haiku-4-5": 64_000,
        "claude-3-5-haiku-latest": 8_192,
        "claude-3-haiku-20240307": 4_096,
        "gemini-2.5-flash": 65_536,
        "gemini-2.5-flash-lite": 65_536,
        "gemini-2.5-pro": 65_536,
        "gemini-2.0-flash": 8_192,
        "gemini-2.0-flash-lite": 8_192,
    }
)

# The largest ``dimensions`` each embedding model returns (its native size); 0 for a model
# that does not let the client choose.
EMBEDDING_DIMENSIONS: Mapping[str, int] = MappingProxyType(
    {
        "text-embedding-3-small": 1_536,
        "text-embedding-3-large": 3_072,
        "text-embedding-ada-002": 0,  # a fixed 1536: it takes no ``dimensions`` at all
    }
)


def max_output_tokens(models: Iterable[str]) -> int:
    """The output-token ceiling shared by every model in ``models`` (the smallest)."""
    return min(
        (MAX_OUTPUT_TOKENS.get(m, DEFAULT_MAX_OUTPUT_TOKENS) for m in models),
        default=DEFAULT_MAX_OUTPUT_TOKENS,
    )


def embedding_dimensions(models: Iterable[str]) -> int:
    """The ``dimensions`` ceiling shared by every embedding model in ``models``."""
    return min(
        (EMBEDDING_DIMENSIONS.get(m, DEFAULT_EMBEDDING_DIMENSIONS) for m in models),
        default=DEFAULT_EMBEDDING_DIMENSIONS,
    )
