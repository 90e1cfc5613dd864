"""What the mock provider does with the request options it reads.

It honours ``n``, ``logprobs``/``top_logprobs`` and ``dimensions`` as OpenAI does, within
OpenAI's limits: ``n`` in 1..128, ``top_logprobs`` in 0..20 (and only with ``logprobs: true``),
``dimensions`` up to the embedding model's size, ``encoding_format`` ``float`` or ``base64``;
``tools`` and ``tool_choice`` must have the shapes it reads. Anything else is the 400
``invalid_request_error`` a real provider answers, raised through the same mapping as a real
upstream's answer (never a crash inside the provider).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from farebox.errors import UpstreamError
from farebox.http.client import error_for_status

JSON = dict[str, Any]

MAX_N = 128
MAX_TOP_LOGPROBS = 20
DEFAULT_EMBEDDING_SIZE = 1536
# the native size of each embedding model; models not listed are DEFAULT_EMBEDDING_SIZE
EMBEDDING_SIZES: Mapping[str, int] = MappingProxyType(
    {
        "text-embedding-3-small": 1536,
        "text-embedding-3-large": 3072,
        "text-embedding-ada-002": 1536,
    }
)
FIXED_SIZE_MODELS = frozenset({"text-embedding-ada-002"})  # they refuse ``dimensions``
ENCODINGS = ("float", "base64")


@dataclass(frozen=True, slots=True)
class ChoiceShape:
    """How many choices to generate, and the log probabilities each token carries."""

    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0


SINGLE = ChoiceShape()


def rejected(message: str, param: str, code: str, provider: str) -> UpstreamError:
    """The 400 a real OpenAI upstream answers, mapped as the gateway maps a real one."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return error_for_status(400, error, provider=provider)


def _integer(body: Mapping[str, Any], field: str, low: int, high: int, provider: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(field, "an integer", value, provider)
    if value < low:
        raise rejected(
            f"Invalid '{field}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            field,
            "integer_below_min_value",
            provider,
        )
    if value > high:
        raise rejected(
            f"Invalid '{field}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            field,
            "integer_above_max_value",
            provider,
        )
    return value


def choice_shape(body: Mapping[str, Any], provider: str) -> ChoiceShape:
    """The request's ``n`` and log-probability options, or the upstream's 400."""
    if body.get("n") is None and body.get("logprobs") is None and body.get("top_logprobs") is None:
        return SINGLE  # the common case, kept cheap
    n = _integer(body, "n", 1, MAX_N, provider) or 1
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _wrong_type("logprobs", "a boolean", logprobs, provider)
    top = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, provider)
    if top is not None and not logprobs:
        raise rejected(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
            "'top_logprobs' is used.",
            "top_logprobs",
            "invalid_value",
            provider,
        )
    return ChoiceShape(n, bool(logprobs), top or 0)


def check_tools(body: Mapping[str, Any], provider: str) -> None:
    """``tools`` and ``tool_choice`` in the shapes the mock reads, or the upstream's 400."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _wrong_type("tools", "an array", tools, provider)
        for i, tool in enumerate(tools):
            _check_tool(tool, f"tools[{i}]", provider)
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        return
    if not isinstance(choice, dict):
        raise rejected(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an object.",
            "tool_choice",
            "invalid_value",
            provider,
        )
    if choice.get("type") == "function":
        _check_function(choice.get("function"), "tool_choice.function", provider)


def _check_tool(tool: Any, where: str, provider: str) -> None:
    if not isinstance(tool, dict):
        raise _wrong_type(where, "an object", tool, provider)
    if tool.get("type") == "function":
        _check_function(tool.get("function"), f"{where}.function", provider)
        parameters = tool["function"].get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _wrong_type(f"{where}.function.parameters", "an object", parameters, provider)
    elif tool.get("type") != "custom":
        raise rejected(
            f"Invalid value for '{where}.type': expected 'function' or 'custom'.",
            f"{where}.type",
            "invalid_value",
            provider,
        )


def _check_function(function: Any, where: str, provider: str) -> None:
    if function is None:
        raise rejected(
            f"Missing required parameter: '{where}'.", where, "missing_required_parameter", provider
        )
    if not isinstance(function, dict):
        raise _wrong_type(where, "an object", function, provider)
    if not isinstance(function.get("name"), str):
        raise _wrong_type(f"{where}.name", "a string", function.get("name"), provider)


def _wrong_type(where: str, expected: str, value: Any, provider: str) -> UpstreamError:
    got = "null" if value is None else type(value).__name__
    return rejected(
        f"Invalid type for '{where}': expected {expected}, but got {got} instead.",
        where,
        "invalid_type",
        provider,
    )


def embedding_size(body: Mapping[str, Any], provider: str) -> int:
    """The vector length to return: ``dimensions`` within the model's size, or the model's."""
    model = str(body.get("model", ""))
    native = EMBEDDING_SIZES.get(model, DEFAULT_EMBEDDING_SIZE)
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise rejected(
            f"Invalid value for 'encoding_format': {encoding!r}. Supported values are: "
            "'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
            provider,
        )
    if body.get("dimensions") is None:
        return native
    if model in FIXED_SIZE_MODELS:
        raise rejected(
            "This model does not support specifying dimensions.",
            "dimensions",
            "invalid_value",
            provider,
        )
    dims = _integer(body, "dimensions", 1, native, provider)
    return dims if dims is not None else native


def token_logprobs(
    tokens: Sequence[str], top: int, rng: random.Random, vocabulary: Sequence[str]
) -> list[JSON]:
    """``logprobs.content`` for these tokens: each with ``top`` most likely alternatives."""
    return [_token_entry(token, top, rng, vocabulary) for token in tokens]


def _token_entry(token: str, top: int, rng: random.Random, vocabulary: Sequence[str]) -> JSON:
    logprob = -round(rng.expovariate(4.0), 6)
    alternatives: list[JSON] = []
    if top:
        alternatives.append(_entry(token, logprob))
        space = " " if token.startswith(" ") else ""
        others = [w for w in vocabulary if space + w != token]
        below = logprob
        for word in rng.sample(others, min(top - 1, len(others))):
            below = round(below - rng.uniform(0.05, 1.5), 6)
            alternatives.append(_entry(space + word, below))
    return {**_entry(token, logprob), "top_logprobs": alternatives}


def _entry(token: str, logprob: float) -> JSON:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}
