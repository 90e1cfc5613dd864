"""A plan's policy applied to a chat request before admission."""

from __future__ import annotations

from typing import Any

import orjson

from farebox.core.plans import Plan
from farebox.core.tools import DENY, tool_names
from farebox.errors import InputTooLarge, InvalidRequest, ToolDenied, ToolRequiresApproval


def apply_policy(plan: Plan, body: dict[str, Any], input_tokens: int) -> None:
    """The plan's tool policy, ``max_tokens`` limit and input size limits, applied to a chat
    request body (``max_tokens`` may be clamped in place)."""
    if plan.tools.enabled:
        verdict = plan.tools.check(tool_names(body))
        if verdict is not None:
            error = ToolDenied if verdict.kind == DENY else ToolRequiresApproval
            raise error(verdict.message(), param="tools", extra={"tool": verdict.name})
    field_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    requested = body.get(field_name)
    if plan.max_tokens is not None:
        if requested is None:
            body[field_name] = plan.max_tokens
        elif requested > plan.max_tokens:
            if plan.max_tokens_policy == "reject":
                raise InvalidRequest(
                    f"{field_name} {requested} exceeds your plan's limit of {plan.max_tokens}.",
                    param=field_name,
                    code="max_tokens_exceeded",
                )
            body[field_name] = plan.max_tokens
    if plan.max_input_chars is not None:
        size = len(orjson.dumps(body.get("messages")))
        if size > plan.max_input_chars:
            raise InputTooLarge(
                f"The input is {size} characters; your plan allows {plan.max_input_chars}.",
                param="messages",
                extra={"limit": plan.max_input_chars, "unit": "characters"},
            )
    if plan.max_input_tokens is not None and input_tokens > plan.max_input_tokens:
        raise InputTooLarge(
            f"The input is about {input_tokens} tokens; your plan allows {plan.max_input_tokens}.",
            param="messages",
            extra={"limit": plan.max_input_tokens, "unit": "tokens"},
        )
