"""A plan's tool policy, applied to the tool and function names a chat request offers the model.

``tool_names(body)`` collects every tool or function name a request body mentions, in order of
first appearance and without duplicates, for both wire formats:

* OpenAI chat: ``tools`` (``{"type": "function", "function": {"name": ...}}`` and other tool
  types such as ``{"type": "custom", "custom": {"name": ...}}``), legacy ``functions``, a
  ``tool_choice`` naming a tool and legacy ``function_call``; plus tool calls already in the
  conversation (``messages[*].tool_calls[*].function.name`` and legacy
  ``messages[*].function_call.name``).
* Anthropic Messages: ``tools`` (client tools ``{"name": ..., "input_schema": ...}`` and server
  tools such as ``{"type": "web_search_20250305", "name": "web_search"}``), ``tool_choice``
  ``{"type": "tool", "name": ...}``, and ``tool_use`` / ``server_tool_use`` content blocks
  already in ``messages``.

The body has only been validated loosely, so anything of the wrong shape (a non-dict item, a
non-string or empty name, a non-list ``tools``) is skipped rather than raising.

``ToolPolicy`` holds three tuples of glob patterns, matched case-sensitively with
``fnmatch.fnmatchcase`` (``database.delete*``, ``payments.*``, ``*``):

* ``deny``: a name matching any of these may not be used.
* ``allow``: when non-empty, a name must match at least one of these; a name matching none is
  denied too. An empty ``allow`` allows every name not denied.
* ``require_approval``: a name matching any of these may only be used through the caller's
  approval flow.

``ToolPolicy.check(names)`` returns ``None`` when every name may be used, else the first
problem as a ``ToolVerdict``. Denial beats approval: every name is checked for denial (a
``deny`` match first, then an ``allow`` miss) before any name is checked for approval, so a
request offering both a denied and an approval-gated tool is reported as denied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

__all__ = ["DENY", "REQUIRE_APPROVAL", "ToolPolicy", "ToolVerdict", "tool_names"]

DENY = "deny"
REQUIRE_APPROVAL = "require_approval"

# Content blocks in Anthropic message history that record a call to a named tool.
_ANTHROPIC_CALL_BLOCKS = frozenset({"tool_use", "server_tool_use"})


def _name(value: Any) -> str | None:
    """``value`` when it is a usable name (a non-empty string), else None."""
    return value if isinstance(value, str) and value else None


def _item_name(item: Any) -> str | None:
    """The name of a tool definition, tool choice or tool call in either format.

    ``item[item["type"]]["name"]`` when present (OpenAI ``function``, ``custom``, ...), else
    ``item["name"]`` (Anthropic tools, Anthropic ``tool_choice``, legacy OpenAI functions)."""
    if not isinstance(item, Mapping):
        return None
    kind = item.get("type")
    if isinstance(kind, str):
        inner = item.get(kind)
        if isinstance(inner, Mapping):
            name = _name(inner.get("name"))
            if name is not None:
                return name
    return _name(item.get("name"))


def _items(value: Any) -> list[Any]:
    """``value`` when it is a list (or tuple), else an empty list."""
    return list(value) if isinstance(value, list | tuple) else []


def tool_names(body: Mapping[str, Any]) -> list[str]:
    """Every tool or function name in a chat request body, in order, without duplicates."""
    found: dict[str, None] = {}

    def add(name: str | None) -> None:
        if name is not None:
            found.setdefault(name, None)

    if not isinstance(body, Mapping):
        return []
    for tool in _items(body.get("tools")):
        add(_item_name(tool))
    for function in _items(body.get("functions")):
        add(_item_name(function))
    # Strings ("auto", "none", "required") name no tool; {"type": "auto"} has no name either.
    add(_item_name(body.get("tool_choice")))
    add(_item_name(body.get("function_call")))
    for message in _items(body.get("messages")):
        if not isinstance(message, Mapping):
            continue
        for call in _items(message.get("tool_calls")):
            add(_item_name(call))
        add(_item_name(message.get("function_call")))
        for block in _items(message.get("content")):
            if isinstance(block, Mapping) and block.get("type") in _ANTHROPIC_CALL_BLOCKS:
                add(_name(block.get("name")))
    return list(found)


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    """Why a request may not use a tool as is: ``kind`` is ``"deny"`` or ``"require_approval"``;
    ``pattern`` is the matching pattern, or None for a name missing from the allow list."""

    kind: str
    name: str
    pattern: str | None

    def message(self) -> str:
        """A sentence for an API error."""
        if self.kind == DENY:
            if self.pattern is None:
                return f"The tool {self.name!r} is not in your plan's allowed tools."
            return f"The tool {self.name!r} is denied by your plan (pattern {self.pattern!r})."
        if self.kind == REQUIRE_APPROVAL:
            where = "" if self.pattern is None else f" (pattern {self.pattern!r})"
            return (
                f"The tool {self.name!r} requires approval{where}: "
                "route the request through your approval flow."
            )
        return f"The tool {self.name!r} may not be used under your plan ({self.kind})."


def _first_match(name: str, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        if fnmatchcase(name, pattern):
            return pattern
    return None


def _patterns(field: str, value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"ToolPolicy.{field} must be a sequence of patterns, not a string")
    patterns = tuple(value)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"ToolPolicy.{field} patterns must be strings, got {pattern!r}")
    return patterns


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """Glob patterns (``fnmatch.fnmatchcase``, case-sensitive) over tool names."""

    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    require_approval: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept any iterable of strings (e.g. a list from config) but store tuples.
        for field in ("deny", "allow", "require_approval"):
            object.__setattr__(self, field, _patterns(field, getattr(self, field)))

    @property
    def enabled(self) -> bool:
        """Whether any pattern is set; an empty policy allows everything."""
        return bool(self.deny or self.allow or self.require_approval)

    def check(self, names: Iterable[str]) -> ToolVerdict | None:
        """None when every name may be used, else the first problem (denials before
        approvals)."""
        if not self.enabled:
            return None
        listed = tuple(names)
        for name in listed:
            pattern = _first_match(name, self.deny)
            if pattern is not None:
                return ToolVerdict(DENY, name, pattern)
            if self.allow and _first_match(name, self.allow) is None:
                return ToolVerdict(DENY, name, None)
        for name in listed:
            pattern = _first_match(name, self.require_approval)
            if pattern is not None:
                return ToolVerdict(REQUIRE_APPROVAL, name, pattern)
        return None
