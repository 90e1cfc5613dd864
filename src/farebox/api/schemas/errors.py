"""A pydantic ``ValidationError`` as one ``InvalidRequest`` that names the offending ``param``
the way OpenAI does (``messages[0].role``, ``tools[0].function.name``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from farebox.errors import InvalidRequest

_DISCRIMINATORS = ("type", "role")
_TAG_ERRORS = ("union_tag_invalid", "union_tag_not_found")


def invalid_request(exc: ValidationError, body: Mapping[str, Any]) -> InvalidRequest:
    """The most specific problem in ``exc`` (the deepest path; union members that failed at
    the same path are described together)."""
    found = [(_walk(e, body), e) for e in exc.errors(include_url=False, include_input=False)]
    (param, value, _), error = max(found, key=lambda f: f[0][2])
    alike = [e for (p, _, _), e in found if p == param]
    # union members the value had the right type for say more than those it did not
    alike = [e for e in alike if e["type"] not in _TYPES] or alike
    if error["type"] in _TAG_ERRORS:
        return _tag_error(error, param, value)
    if error["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if error["type"] == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}.", param=param)
    expected = " or ".join(dict.fromkeys(_expected(e) for e in alike))
    return InvalidRequest(
        f"Invalid value for '{param}': expected {expected} (got {_kind(value)}).",
        param=param or None,
    )


def _walk(error: ErrorDetails, body: Any) -> tuple[str, Any, int]:
    """``error["loc"]`` as an OpenAI-style path, the value found there, and the path's depth.

    The location pydantic reports also holds union member labels (``str``, ``list[str]``)
    and discriminator tags (the ``type`` or ``role`` value, or a made-up ``<...>`` tag):
    walking the body alongside it tells them from field names."""
    loc: Sequence[int | str] = error["loc"]
    path, value, depth, tagged = "", body, 0, False
    for i, step in enumerate(loc):
        more = i + 1 < len(loc)
        if isinstance(step, int):
            path, depth, tagged = f"{path}[{step}]", depth + 1, False
            value = value[step] if isinstance(value, list) and 0 <= step < len(value) else None
        elif step.startswith("<") or not isinstance(value, dict):
            continue  # a made-up tag, or a union member label
        elif more and not tagged and any(value.get(k) == step for k in _DISCRIMINATORS):
            tagged = True  # the discriminator's value, naming the union member
        elif step in value:
            path, depth, tagged = _join(path, step), depth + 1, False
            value = value[step]
        elif not more and error["type"] in ("missing", "extra_forbidden"):
            path, depth, value = _join(path, step), depth + 1, None
    return path, value, depth


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _tag_error(error: ErrorDetails, path: str, value: Any) -> InvalidRequest:
    """A union picked by a field (``role``, ``type``) whose value is missing or unknown."""
    ctx = error.get("ctx") or {}
    named = str(ctx.get("discriminator", "type"))
    field = named.strip("'()")
    if not isinstance(value, dict):
        wanted = "a string or an object" if named.endswith(")") else "an object"
        return InvalidRequest(
            f"Invalid type for '{path}': expected {wanted} (got {_kind(value)}).",
            param=path or None,
        )
    param = _join(path, field)
    if field not in value:
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
    allowed = ", ".join(repr(t) for t in tags if t and not t.startswith("<"))
    return InvalidRequest(
        f"Invalid value for '{param}': expected one of {allowed} (got {_show(value[field])}).",
        param=param,
    )


def _expected(error: ErrorDetails) -> str:
    """What the value should have been, in words."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _TYPES:
        return _TYPES[kind]
    if kind in _BOUNDS:
        template, key = _BOUNDS[kind]
        return template.format(ctx.get(key))
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern")
        return "a non-blank string" if pattern == r"\S" else f"a string matching {pattern}"
    message = error["msg"]
    return message.removeprefix("Input should be ").removeprefix("Value error, ")


_TYPES = MappingProxyType(
    {
        "string_type": "a string",
        "int_type": "an integer",
        "float_type": "a number",
        "bool_type": "a boolean",
        "list_type": "an array",
        "dict_type": "an object",
        "model_type": "an object",
        "model_attributes_type": "an object",
    }
)
_BOUNDS = MappingProxyType(
    {
        "too_long": ("at most {} item(s)", "max_length"),
        "too_short": ("at least {} item(s)", "min_length"),
        "string_too_long": ("at most {} characters", "max_length"),
        "string_too_short": ("at least {} characters", "min_length"),
        "less_than_equal": ("at most {}", "le"),
        "greater_than_equal": ("at least {}", "ge"),
        "less_than": ("less than {}", "lt"),
        "greater_than": ("greater than {}", "gt"),
    }
)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    for kind, name in names.items():
        if type(value) is kind:
            return f"{name} {_show(value)}"
    return "an array" if isinstance(value, list) else "an object"


def _show(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return "null" if value is None else "an object" if isinstance(value, dict) else "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
